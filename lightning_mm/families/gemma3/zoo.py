"""Gemma 3 zoo entries (Gemma Team, "Gemma 3 Technical Report").

``pretrained=True`` loads the whole released checkpoint through :mod:`lightning_mm.interop`; the config below holds the
architecture entries of the released ``config.json`` of ``google/gemma-3-4b-it`` (transformers fills in the rest with
its ``Gemma3TextConfig`` defaults: 8 heads, 4 key-value heads, head_dim 256, 262,208 embedding rows, 5 local layers
per global one). The hub was not reachable when it was written down: the entry was checked against transformers'
``Gemma3ForConditionalGeneration`` built from the same dict (equal parameter counts), not against the hub file byte
by byte. Pan-and-scan is off (one 896 px view per image).
"""

from __future__ import annotations

from typing import Any

from lightning_mm.interop.checkpoint import config_spec_fields
from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["GEMMA3_4B_CONFIG", "TINY_GEMMA3_CONFIG"]

GEMMA3_VOCAB_SIZE = 262208
GEMMA3_IMAGE_TOKEN_ID = 262144  # <image_soft_token>
GEMMA3_BOI_TOKEN_ID = 255999  # <start_of_image>
GEMMA3_EOI_TOKEN_ID = 256000  # <end_of_image>
#: The released image processor's settings (``preprocessor_config.json``): bilinear resize, mean = std = 0.5.
GEMMA3_PREPROCESSOR: dict[str, Any] = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 2}

# google/gemma-3-4b-it config.json (architecture entries)
GEMMA3_4B_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "boi_token_index": GEMMA3_BOI_TOKEN_ID,
    "eoi_token_index": GEMMA3_EOI_TOKEN_ID,
    "image_token_index": GEMMA3_IMAGE_TOKEN_ID,
    "mm_tokens_per_image": 256,
    "text_config": {
        "model_type": "gemma3_text",
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 34,
        "sliding_window": 1024,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "vocab_size": GEMMA3_VOCAB_SIZE,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "vision_use_head": False,
    },
}

#: A tiny Gemma 3 for tests: 64 px images, 8 x 8 patches pooled to 16 tokens; one sliding and one global layer.
TINY_GEMMA3_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "boi_token_index": 508,
    "eoi_token_index": 509,
    "image_token_index": 511,
    "mm_tokens_per_image": 16,
    "text_config": {
        "model_type": "gemma3_text",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 24,
        "layer_types": ["sliding_attention", "full_attention"],
        "vocab_size": 512,
        "max_position_embeddings": 512,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "image_size": 64,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "patch_size": 8,
        "vision_use_head": False,
    },
}

GEMMA3_4B = register_model(
    ModelSpec(
        name="gemma-3-4b-it", **config_spec_fields(GEMMA3_4B_CONFIG, GEMMA3_PREPROCESSOR, "google/gemma-3-4b-it")
    ).replace(
        vision_model="vit_so400m_patch14_siglip_gap_896",
        description="Gemma 3 4B instruct as released: SigLIP so400m 896 px (last block + post-norm) + avg-pool 4x4 / "
        "RMSNorm / linear to 256 tokens + Gemma 3 4B; image tokens bidirectional; pan-and-scan off",
    )
)
TINY_GEMMA3 = register_model(
    ModelSpec(name="tiny-gemma3", **config_spec_fields(TINY_GEMMA3_CONFIG, GEMMA3_PREPROCESSOR, "tiny-gemma3")).replace(
        checkpoint=None, tokenizer="builtin:synthetic", description="tiny random Gemma 3 for tests (image blocks)"
    )
)
