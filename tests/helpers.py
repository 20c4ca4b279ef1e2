"""Constants and builders that test modules import (``from tests.helpers import ...``); fixtures are in conftest.py."""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPVisionConfig, LlamaConfig, Qwen2Config, SiglipVisionConfig

#: A tiny ViT tower (transformers vision config arguments); the image and patch sizes are the caller's.
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4}

#: A tiny decoder with grouped-query attention (transformers text config arguments) and the special token ids of
#: tests/assets/tokenizer; the vocabulary size and the context length are the caller's.
TINY_TEXT = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def tiny_vision_config(family: str, **kwargs) -> CLIPVisionConfig | SiglipVisionConfig:
    """:data:`TINY_VISION` as a CLIP (``clip``: quick_gelu, projection_dim 16) or SigLIP tower; ``kwargs`` add to it
    or replace some of it."""
    if family == "clip":
        return CLIPVisionConfig(**{**TINY_VISION, "hidden_act": "quick_gelu", "projection_dim": 16, **kwargs})
    return SiglipVisionConfig(**{**TINY_VISION, **kwargs})


def tiny_text_config(family: str, **kwargs) -> LlamaConfig | Qwen2Config:
    """:data:`TINY_TEXT` as a Llama (``llama``: untied embeddings) or Qwen2 decoder (tied embeddings); ``kwargs`` add
    to it or replace some of it."""
    if family == "llama":
        return LlamaConfig(**{**TINY_TEXT, "tie_word_embeddings": False, **kwargs})
    return Qwen2Config(**{**TINY_TEXT, "tie_word_embeddings": True, **kwargs})


ASSETS = Path(__file__).resolve().parent / "assets"

#: ``lightning-mm fit`` arguments that run a released-model recipe briefly on the committed LLaVA-format assets (CPU,
#: float32, 2 steps, no activation checkpointing).
RECIPE_ON_LLAVA_ASSETS = (
    "--model.init_args.activation_checkpointing=false",
    f"--data.init_args.train_path={ASSETS / 'llava' / 'llava_tiny.json'}",
    f"--data.init_args.image_folder={ASSETS / 'llava'}",
    "--data.init_args.num_workers=0",
    "--data.init_args.batch_size=2",
    "--trainer.accelerator=cpu",
    "--trainer.precision=32-true",
    "--trainer.max_steps=2",
    "--trainer.accumulate_grad_batches=1",
    "--trainer.enable_progress_bar=false",
)
