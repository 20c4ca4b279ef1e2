"""SmolVLM-256M / SmolVLM-500M (Marafioti et al., "SmolVLM: Redefining small and efficient multimodal models").

The released Instruct checkpoints are transformers' Idefics3 (``model_type`` ``idefics3``): SigLIP base patch-16 at
512 px (93M parameters) read at its last block through ``post_layernorm``, pixel shuffle by 4 (1024 patches -> 64
tokens per 512 px tile) + one Linear without bias, and SmolLM2-135M / SmolLM2-360M (Llama) with 49280 embedding rows.
Images are resized to a longest edge of 2048, split into 512 px tiles plus a global view, and written with row/column
marker tokens (:class:`~lightning_mm.families.smolvlm.layout.SmolVLMLayout`). The chat format is ``smolvlm``
(:mod:`lightning_mm.families.smolvlm.template`).

``pretrained=True`` loads the whole released checkpoint through :mod:`lightning_mm.interop`; the configs below are the
architecture entries of the released ``config.json`` / ``preprocessor_config.json`` (transformers fills in the rest
with its defaults), so the entries build offline.
"""

from __future__ import annotations

from typing import Any

from lightning_mm.families.smolvlm.settings import SMOLVLM_IMAGE_PROCESSOR
from lightning_mm.interop.checkpoint import config_spec_fields
from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["SMOLVLM_256M", "SMOLVLM_256M_CONFIG", "SMOLVLM_500M", "SMOLVLM_500M_CONFIG"]

SMOLVLM_VOCAB_SIZE = 49280  # SmolLM2's 49152 tokens + 128 added (<global-img>, <row_i_col_j>, <image>, ...)
SMOLVLM_IMAGE_TOKEN_ID = 49190

# HuggingFaceTB/SmolVLM-256M-Instruct config.json (architecture entries).
SMOLVLM_256M_CONFIG: dict[str, Any] = {
    "architectures": ["Idefics3ForConditionalGeneration"],
    "model_type": "idefics3",
    "image_token_id": SMOLVLM_IMAGE_TOKEN_ID,
    "scale_factor": 4,
    "tie_word_embeddings": False,
    "vocab_size": SMOLVLM_VOCAB_SIZE,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000,
        "tie_word_embeddings": False,
        "vocab_size": SMOLVLM_VOCAB_SIZE,
        "pad_token_id": 2,
    },
    "vision_config": {
        "model_type": "idefics3_vision",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    },
}

# HuggingFaceTB/SmolVLM-500M-Instruct config.json: the same tower and connector with SmolLM2-360M.
SMOLVLM_500M_CONFIG: dict[str, Any] = {
    **SMOLVLM_256M_CONFIG,
    "text_config": {
        **SMOLVLM_256M_CONFIG["text_config"],
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
    },
}


def released_smolvlm(name: str, hub_id: str, config: dict[str, Any], description: str) -> ModelSpec:
    """The spec of a released SmolVLM checkpoint, derived offline from its written-down configs."""
    fields = config_spec_fields(config, SMOLVLM_IMAGE_PROCESSOR, hub_id)
    return ModelSpec(name=name, **fields).replace(vision_model="vit_base_patch16_siglip_512", description=description)


SMOLVLM_256M = register_model(
    released_smolvlm(
        "smolvlm-256m",
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        SMOLVLM_256M_CONFIG,
        "SmolVLM-256M-Instruct as released: SigLIP-B/16-512 (last block + post-norm) + pixel_shuffle4_linear + "
        "SmolLM2-135M; 512 px tiles + global view, 64 tokens each",
    )
)

SMOLVLM_500M = register_model(
    released_smolvlm(
        "smolvlm-500m",
        "HuggingFaceTB/SmolVLM-500M-Instruct",
        SMOLVLM_500M_CONFIG,
        "SmolVLM-500M-Instruct as released: SigLIP-B/16-512 (last block + post-norm) + pixel_shuffle4_linear + "
        "SmolLM2-360M; 512 px tiles + global view, 64 tokens each",
    )
)
