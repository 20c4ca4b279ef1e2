"""A tiny tokenizer with Gemma 3's and PaliGemma's special tokens, and transformers' processors of the tiny models
(PIL image processors), made offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AddedToken,
    AutoTokenizer,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    PaliGemmaProcessor,
    SiglipImageProcessorPil,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BOI, EOI, SOFT = 400, 401, 402  # <start_of_image>, <end_of_image>, <image_soft_token>
PALI_IMAGE = 4  # <image> of tests/assets' tokenizer
#: (height, width): wide, tall, square, small, large
SIZES = [(30, 70), (90, 20), (64, 64), (7, 9), (130, 100)]


def gemma_tokenizer():
    """tests/assets' tokenizer with Gemma 3's image tokens, named as ``Gemma3Processor`` reads them."""
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<start_of_image>", "<end_of_image>")])
    tok.add_tokens([AddedToken("<image_soft_token>", special=True, normalized=False)])
    tok._set_model_specific_special_tokens(
        special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        }
    )
    return tok


def paligemma_tokenizer():
    """tests/assets' tokenizer (its ``<image>`` is PaliGemma's image token)."""
    return AutoTokenizer.from_pretrained(ASSETS / "tokenizer")


def image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A random RGB image of (height, width) ``size``."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def normalised(tiles: torch.Tensor) -> torch.Tensor:
    """uint8 tiles rescaled and normalised with mean = std = 0.5, float64."""
    return (tiles.double() / 255 - 0.5) / 0.5


def gemma3_processor(tokenizer, side: int = 64, tokens: int = 16) -> Gemma3Processor:
    """transformers' Gemma 3 processor of the tiny geometry (PIL backend, bilinear, mean = std = 0.5)."""
    images = Gemma3ImageProcessorPil(
        size={"height": side, "width": side}, resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return Gemma3Processor(images, tokenizer, image_seq_length=tokens)


def paligemma_processor(tokenizer, side: int = 32, tokens: int = 16) -> PaliGemmaProcessor:
    """transformers' PaliGemma processor of the tiny geometry (PIL backend, bicubic, mean = std = 0.5)."""
    images = SiglipImageProcessorPil(
        size={"height": side, "width": side}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    images.image_seq_length = tokens
    return PaliGemmaProcessor(images, tokenizer)
