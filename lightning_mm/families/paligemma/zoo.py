"""PaliGemma 2 zoo entries (Steiner et al., "PaliGemma 2: A Family of Versatile VLMs for Transfer").

``pretrained=True`` loads the whole released checkpoint through :mod:`lightning_mm.interop`; the configs below are
written down so that the entries build offline. Where their values come from (the hub's ``config.json`` of
``google/paligemma2-3b-pt-224`` / ``-448`` cannot be read here): transformers' conversion script
``src/transformers/models/paligemma/convert_paligemma2_weights_to_hf.py`` (huggingface/transformers, commit
15ea02a2), which writes those checkpoints: ``VARIANT_CONFIGS["2b"]`` (2,304 wide, 26 layers, MLP 9,216, 8 heads of 256,
4 key-value heads, ``query_pre_attn_scalar`` 256), ``vocab_size`` 257,152 and ``hidden_activation``
``gelu_pytorch_tanh`` over the rest of ``google/gemma-2-2b-it``'s config (sliding window 4096, attention / final
soft-capping 50 / 30, 8,192 positions, RMSNorm eps 1e-6: transformers' ``Gemma2Config`` defaults, which are that
model's architecture), ``image_token_index`` 257,152, pad / BOS / EOS 0 / 2 / 1, the SigLIP so400m vision config
(1,152 wide, MLP 4,304, 27 layers, 16 heads, patch 14, tanh GELU, no pooling head, ``projection_dim`` 2,304,
``num_image_tokens`` = (image size / 14)^2: 256 at 224 px, 1,024 at 448 px), and
``resize_token_embeddings(257152 + 2, pad_to_multiple_of=64)`` after adding ``<image>``: 257,216 embedding rows. The
counts of the entries equal ``PaliGemmaForConditionalGeneration`` built from the same dicts
(``tests/families/test_gemma_zoo.py``).
"""

from __future__ import annotations

from typing import Any

from lightning_mm.interop.checkpoint import config_spec_fields
from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["PALIGEMMA2_3B_224_CONFIG", "PALIGEMMA2_3B_448_CONFIG", "TINY_PALIGEMMA_CONFIG", "paligemma_config"]

PALIGEMMA2_VOCAB_SIZE = 257216  # 256,000 + 1,024 <locXXXX> + 128 <segXXX>, <image> (257,152), to a multiple of 64
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


# google/paligemma2-3b-pt-224 config.json (architecture entries), as convert_paligemma2_weights_to_hf.py writes it
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
        checkpoint=None,
        tokenizer="builtin:synthetic",  # laid out with <image> at the config's id 511
        description="tiny random PaliGemma 2 for tests and the built-in task (prefix LM)",
    )
)
