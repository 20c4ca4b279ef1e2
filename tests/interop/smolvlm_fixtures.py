"""Tiny SmolVLM / Idefics3 models, tokenizer and processor made offline (shared by the model, data and interop tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AddedToken,
    AutoTokenizer,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)
from transformers.models.smolvlm import processing_smolvlm
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor
from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

from tests.helpers import TINY_TEXT, TINY_VISION

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MARKERS = ["<fake_token_around_image>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)
]
TILE, PATCH, SCALE = 32, 8, 2  # 4 x 4 patches per tile, pixel shuffle 2: 4 image tokens per tile
LONGEST_EDGE = 80  # first resize: longest edge 80, then multiples of 32 (up to 3 x 3 tiles)
SEQ_LEN = (TILE // PATCH) ** 2 // SCALE**2
VOCAB = 448  # 400 + 40 added tokens, padded
#: (height, width) of test images: one view, 3 x 2 tiles (tall), 2 x 3 tiles (wide), 3 x 3 tiles (square)
SIZES = [(20, 20), (60, 37), (23, 45), (50, 50)]


def smolvlm_tokenizer():
    """tests/assets' tokenizer with SmolVLM's marker tokens, <end_of_utterance> and <|im_start|> as special tokens."""
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    tok.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in [*MARKERS, "<end_of_utterance>", "<|im_start|>"]]
    )
    return tok


def image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A random RGB image of (height, width) ``size``."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


if processing_smolvlm.num2words is None:  # SmolVLMProcessor refuses to build without it; only its video prompts use it
    processing_smolvlm.num2words = str


def hf_processor(tokenizer, split: bool = True) -> SmolVLMProcessor:
    """transformers' SmolVLMProcessor with the PIL image processor of the tiny geometry."""
    image_processor = SmolVLMImageProcessorPil(
        size={"longest_edge": LONGEST_EDGE},
        max_image_size={"longest_edge": TILE},
        do_image_splitting=split,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=Image.Resampling.LANCZOS,
    )
    return SmolVLMProcessor(image_processor, tokenizer, SmolVLMVideoProcessor(), image_seq_len=SEQ_LEN)


def tiny_config(model_type: str = "smolvlm", tie: bool = False):
    """A tiny SmolVLM (or Idefics3) config: SigLIP-like tower, pixel shuffle 2, Llama."""
    vision = {**TINY_VISION, "num_hidden_layers": 2, "image_size": TILE, "patch_size": PATCH}
    text = {
        "model_type": "llama",
        **TINY_TEXT,
        "vocab_size": VOCAB,
        "max_position_embeddings": 512,
        "tie_word_embeddings": tie,
    }
    cls = SmolVLMConfig if model_type == "smolvlm" else Idefics3Config
    return cls(vision_config=vision, text_config=text, scale_factor=SCALE, image_token_id=4, tie_word_embeddings=tie)


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every 1-D parameter (norm weights, biases) away from its init value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def make_hf(model_type: str = "smolvlm", seed: int = 0, tie: bool = False):
    """A tiny random transformers SmolVLM / Idefics3 model, norms and biases perturbed, eval mode."""
    torch.manual_seed(seed)
    cls = SmolVLMForConditionalGeneration if model_type == "smolvlm" else Idefics3ForConditionalGeneration
    model = cls(tiny_config(model_type, tie))
    perturb(model, seed)
    return model.eval()


def save_checkpoint(model, tokenizer, path: Path) -> Path:
    """``save_pretrained`` of the model, the tokenizer and the processor into ``path``."""
    model.save_pretrained(path)
    hf_processor(tokenizer).save_pretrained(path)
    return path
