"""Gemma 3 zoo entries (Gemma Team, "Gemma 3 Technical Report").

``pretrained=True`` loads the whole released checkpoint through :mod:`lightning_mm.interop`; the config below is
written down so that the entry builds offline. Where its values come from (the hub's ``config.json`` of
``google/gemma-3-4b-it`` cannot be read here): transformers' conversion script
``src/transformers/models/gemma3/convert_gemma3_weights.py`` (huggingface/transformers, commit 0d7e95d9), which writes
that checkpoint: its ``_VARIANTS["gemma3_4b"]`` text config (vocabulary 262,144, 2,560 wide, MLP 2560 * 8 // 2 =
10,240, 34 layers, 8 heads of 256, 4 key-value heads, sliding window 1024, linear RoPE scaling 8 on the global layers,
``rope_theta`` 1e6 / 1e4 local, ``query_pre_attn_scalar`` 256, no attention soft-capping), its ``_VISION_CONFIG``
(SigLIP 1,152 wide, MLP 4,304, 27 layers, 16 heads, 896 px, patch 14, tanh GELU, LayerNorm eps 1e-6, no pooling
head), the 64 embedding rows it appends for the image tokens when the vision encoder is included (262,144 + 64 =
262,208 rows), the tokenizer's ``<image_soft_token>`` 262,144, ``<start_of_image>`` 255,999 and ``<end_of_image>``
256,000, and its image processor (256 tokens, 896 x 896, bilinear, mean = std = 0.5). The counts of the entry equal
``Gemma3ForConditionalGeneration`` built from the same dict (``tests/families/test_gemma_zoo.py``). Pan-and-scan is
off (one 896 px view per image).
"""

from __future__ import annotations

from typing import Any

from lightning_mm.families.gemma3.layout import BOI_TOKEN, EOI_TOKEN
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

# google/gemma-3-4b-it config.json (architecture entries), as convert_gemma3_weights.py writes it (module docstring)
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
        "intermediate_size": 10240,  # 2560 * 8 // 2
        "num_hidden_layers": 34,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 1024,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},  # the global layers; the local ones: default, 1e4
        "vocab_size": GEMMA3_VOCAB_SIZE,  # 262,144 + 64 image-token rows
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
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
# The built-in synthetic tokenizer is laid out with the tiny config's ids (<start_of_image> 508, <end_of_image> 509,
# <image_soft_token> 511, reserved tokens between the task's words and them), so tiny-gemma3 trains on the built-in task.
TINY_GEMMA3 = register_model(
    ModelSpec(name="tiny-gemma3", **config_spec_fields(TINY_GEMMA3_CONFIG, GEMMA3_PREPROCESSOR, "tiny-gemma3")).replace(
        checkpoint=None,
        tokenizer="builtin:synthetic",
        special_token_ids={
            BOI_TOKEN: TINY_GEMMA3_CONFIG["boi_token_index"],
            EOI_TOKEN: TINY_GEMMA3_CONFIG["eoi_token_index"],
        },
        description="tiny random Gemma 3 for tests and the built-in task (image blocks)",
    )
)
