"""PaliGemma 2 zoo entries (Steiner et al., "PaliGemma 2: A Family of Versatile VLMs for Transfer").

``pretrained=True`` loads the whole released checkpoint through :mod:`lightning_mm.interop`; the configs below are the
architecture entries of the released ``config.json`` of ``google/paligemma2-3b-pt-224`` and
``google/paligemma2-3b-pt-448`` (the 448 px file differs in the image size and the 1,024 image tokens only; transformers
fills in the rest with its defaults), so the entries build offline. The hub was not reachable when they were written
down: the entries were checked against transformers' ``PaliGemmaForConditionalGeneration`` built from the same dicts
(equal parameter counts), not against the hub files byte by byte.
"""

from __future__ import annotations

from typing import Any

from lightning_mm.interop.checkpoint import config_spec_fields
from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["PALIGEMMA2_3B_224_CONFIG", "PALIGEMMA2_3B_448_CONFIG", "TINY_PALIGEMMA_CONFIG", "paligemma_config"]

PALIGEMMA2_VOCAB_SIZE = 257216  # Gemma's 256,000 + 1,024 <locXXXX> + 128 <segXXX> + 64 unused rows
PALIGEMMA2_IMAGE_TOKEN_ID = 257152  # <image>

_GEMMA2_2B: dict[str, Any] = {
    "model_type": "gemma2",
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-6,
    "vocab_size": PALIGEMMA2_VOCAB_SIZE,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
}
_SO400M: dict[str, Any] = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": False,
}


def paligemma_config(text: dict[str, Any], vision: dict[str, Any], image_size: int, image_token_id: int) -> dict:
    """A PaliGemma ``config.json`` (architecture entries) from its text and vision parts."""
    tokens = (image_size // vision["patch_size"]) ** 2
    return {
        "architectures": ["PaliGemmaForConditionalGeneration"],
        "model_type": "paligemma",
        "image_token_id": image_token_id,
        "projection_dim": text["hidden_size"],
        "hidden_size": text["hidden_size"],
        "text_config": {**text, "num_image_tokens": tokens},
        "vision_config": {
            **vision,
            "image_size": image_size,
            "num_image_tokens": tokens,
            "projection_dim": text["hidden_size"],
        },
    }


# google/paligemma2-3b-pt-224 config.json (architecture entries)
PALIGEMMA2_3B_224_CONFIG = paligemma_config(_GEMMA2_2B, _SO400M, 224, PALIGEMMA2_IMAGE_TOKEN_ID)
# google/paligemma2-3b-pt-448 config.json: the same model at 448 px (1,024 image tokens)
PALIGEMMA2_3B_448_CONFIG = paligemma_config(_GEMMA2_2B, _SO400M, 448, PALIGEMMA2_IMAGE_TOKEN_ID)

#: A tiny PaliGemma 2 for tests (the builtin synthetic tokenizer's 300-odd ids fit in 512 rows).
TINY_PALIGEMMA_CONFIG = paligemma_config(
    {
        **_GEMMA2_2B,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 24,
        "vocab_size": 512,
        "max_position_embeddings": 512,
    },
    {
        **_SO400M,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
    },
    32,
    511,
)


def _released(name: str, hub_id: str, config: dict[str, Any], timm_name: str, description: str) -> ModelSpec:
    fields = config_spec_fields(config, None, hub_id)
    return ModelSpec(name=name, **fields).replace(vision_model=timm_name, description=description)


PALIGEMMA2_3B_224 = register_model(
    _released(
        "paligemma2-3b-pt-224",
        "google/paligemma2-3b-pt-224",
        PALIGEMMA2_3B_224_CONFIG,
        "vit_so400m_patch14_siglip_gap_224",
        "PaliGemma 2 3B pretrained at 224 px: SigLIP so400m (last block + post-norm) + Linear + Gemma 2 2B; "
        "prefix-LM attention, 256 tokens",
    )
)
PALIGEMMA2_3B_448 = register_model(
    _released(
        "paligemma2-3b-pt-448",
        "google/paligemma2-3b-pt-448",
        PALIGEMMA2_3B_448_CONFIG,
        "vit_so400m_patch14_siglip_gap_448",
        "PaliGemma 2 3B pretrained at 448 px: SigLIP so400m + Linear + Gemma 2 2B; prefix-LM attention, 1024 tokens",
    )
)
TINY_PALIGEMMA = register_model(
    ModelSpec(name="tiny-paligemma", **config_spec_fields(TINY_PALIGEMMA_CONFIG, None, "tiny-paligemma")).replace(
        checkpoint=None, tokenizer="builtin:synthetic", description="tiny random PaliGemma 2 for tests (prefix LM)"
    )
)
