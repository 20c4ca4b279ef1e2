"""Tiny InternVL models, tokenizer and processor made offline (shared by the InternVL tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AddedToken,
    AutoTokenizer,
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TILE, PATCH, SCALE = 32, 8, 2  # 4 x 4 patches a tile, pixel shuffle 0.5: 4 image tokens a tile
PER_TILE = (TILE // PATCH) ** 2 // SCALE**2
MAX_TILES = 6
VOCAB = 416  # 400 + 3 added tokens, padded
START, END, CONTEXT = 400, 401, 402  # <img>, </img>, <IMG_CONTEXT>
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: (height, width): tall (several tiles), wide, square-ish, very wide, one tile
SIZES = [(70, 30), (25, 60), (50, 45), (20, 90), (30, 30)]


def internvl_tokenizer():
    """tests/assets' tokenizer with <img>, </img>, <IMG_CONTEXT> as special tokens, named as InternVLProcessor reads
    them (``start_image_token``, ...)."""
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<img>", "</img>", "<IMG_CONTEXT>")])
    tok._set_model_specific_special_tokens(
        special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        }
    )
    return tok


def image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A random RGB image of (height, width) ``size``."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def hf_processor(tokenizer) -> InternVLProcessor:
    """transformers' InternVLProcessor with the PIL image processor of the tiny geometry."""
    images = GotOcr2ImageProcessorPil(
        size={"height": TILE, "width": TILE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=MAX_TILES,
        image_mean=list(MEAN),
        image_std=list(STD),
    )
    return InternVLProcessor(images, tokenizer, InternVLVideoProcessor(), image_seq_length=PER_TILE)


def tiny_config(feature_layer: int = -1, **overrides) -> InternVLConfig:
    """A tiny InternVL config: 3-block InternViT (32 px, patch 8), pixel shuffle 0.5, 2-layer Qwen2."""
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "image_size": TILE,
        "patch_size": PATCH,
        "attention_bias": True,
    }
    text = {
        "model_type": "qwen2",
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 512,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    }
    kwargs = {
        "image_token_id": CONTEXT,
        "image_seq_length": PER_TILE,
        "vision_feature_layer": feature_layer,
        "tie_word_embeddings": False,
        **overrides,
    }
    return InternVLConfig(vision_config=vision, text_config=text, **kwargs)


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every 1-D parameter (norms, biases, layer scales) and the CLS / position embeddings off their init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 or "cls_token" in name or "position_embeddings" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def make_hf(seed: int = 0, feature_layer: int = -1) -> InternVLForConditionalGeneration:
    """A tiny random transformers InternVL, float64, norms / biases / layer scales perturbed, eval mode."""
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(tiny_config(feature_layer)).double()
    perturb(model, seed)
    return model.eval()


def save_checkpoint(model, tokenizer, path: Path) -> Path:
    """``save_pretrained`` of the model and of its processor (tokenizer included) into ``path``."""
    model.save_pretrained(path)
    hf_processor(tokenizer).save_pretrained(path)
    return path


def normalised(tiles: torch.Tensor) -> torch.Tensor:
    """(n, 3, T, T) uint8 tiles -> float64 normalised with ImageNet's mean / std, as the processor does."""
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (tiles.double() / 255 - mean) / std
