"""InternVL3-1B / InternVL3-2B (Zhu et al., "InternVL3: Exploring Advanced Training and Test-Time Recipes for
Open-Source Multimodal Models") and a miniature for tests.

The released ``-hf`` checkpoints are transformers' InternVL (``model_type`` ``internvl``): InternViT-300M-448px-V2.5
(timm ``vit_intern300m_patch14_448``) read at its last block, CLS dropped, pixel shuffle 0.5 (1024 patches -> 256
tokens a 448 px tile), LayerNorm -> Linear -> GELU -> Linear, and Qwen2.5-0.5B / Qwen2.5-1.5B (transformers' Qwen2)
with 151,674 embedding rows and an untied ``lm_head``. Images are cut into up to 12 tiles + a thumbnail
(:class:`~lightning_mm.families.internvl.layout.InternVLLayout`); the chat format is ``chatml``.

Where the configs below come from: the ``config.json`` of ``OpenGVLab/InternVL3-1B-hf`` / ``OpenGVLab/InternVL3-2B-hf``
could not be read on this machine (no hub access, and no copy of them in the reference corpora). They are written
down as transformers' conversion script (``models/internvl/convert_internvl_weights_to_hf.py``) writes them from the
original ``OpenGVLab/InternVL3-1B`` / ``-2B`` configs: the InternViT-300M vision config (``attention_bias`` true, no
qk norm, layer scale, mean pooling, layer norm eps 1e-6), the LLM config of the originals (Qwen2.5-0.5B: 896 wide, 24
layers, 14 heads, 2 KV heads, MLP 4864; Qwen2.5-1.5B: 1536 wide, 28 layers, 12 heads, 2 KV heads, MLP 8960; vocabulary
151,674; ``tie_word_embeddings`` false, as the originals' top-level config says), ``image_token_id`` 151667 and
``eos_token_id`` 151645 as the script sets them, and the script's image processor (448 px, ImageNet mean / std,
bicubic, 1 to 12 tiles). The originals' dynamic RoPE scaling (factor 2) only acts past 32,768 positions and is left out.
``pretrained=True`` loads the released checkpoint through the ``hf:`` import path (its own config then rules).
"""

from __future__ import annotations

from typing import Any

from lightning_mm.families.internvl.projector import projector_name
from lightning_mm.families.internvl.tower import TIMM_BASE
from lightning_mm.interop.checkpoint import config_spec_fields
from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["INTERNVL3_1B_CONFIG", "INTERNVL3_2B_CONFIG", "INTERNVL_IMAGE_PROCESSOR", "TINY_INTERNVL"]

INTERNVL_VOCAB_SIZE = 151674  # Qwen2.5's 151,643 tokens + specials, <img>, </img>, <IMG_CONTEXT>, <quad>, ...
INTERNVL_IMAGE_TOKEN_ID = 151667  # <IMG_CONTEXT>

# InternViT-300M-448px-V2.5 as transformers' InternVLVisionConfig (architecture entries).
INTERNVIT_300M: dict[str, Any] = {
    "model_type": "internvl_vision",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "attention_bias": True,
    "use_qk_norm": False,
    "hidden_act": "gelu",
    "norm_type": "layer_norm",
    "layer_norm_eps": 1e-6,
    "image_size": [448, 448],
    "patch_size": [14, 14],
    "layer_scale_init_value": 0.1,
    "use_mean_pooling": True,
    "use_absolute_position_embeddings": True,
    "use_mask_token": False,
}

# OpenGVLab/InternVL3-1B-hf (derived as the module docstring says).
INTERNVL3_1B_CONFIG: dict[str, Any] = {
    "architectures": ["InternVLForConditionalGeneration"],
    "model_type": "internvl",
    "downsample_ratio": 0.5,
    "image_seq_length": 256,
    "image_token_id": INTERNVL_IMAGE_TOKEN_ID,
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "default",
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "vocab_size": INTERNVL_VOCAB_SIZE,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "tie_word_embeddings": False,
    },
    "vision_config": INTERNVIT_300M,
}

# OpenGVLab/InternVL3-2B-hf: the same tower and projector with Qwen2.5-1.5B.
INTERNVL3_2B_CONFIG: dict[str, Any] = {
    **INTERNVL3_1B_CONFIG,
    "text_config": {
        **INTERNVL3_1B_CONFIG["text_config"],
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
    },
}

# their image processor (GotOcr2ImageProcessor as the conversion script writes it; InternVLProcessor crops to tiles)
INTERNVL_IMAGE_PROCESSOR: dict[str, Any] = {
    "size": {"height": 448, "width": 448},
    "min_patches": 1,
    "max_patches": 12,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,  # bicubic
}


def released_internvl(name: str, hub_id: str, config: dict[str, Any], description: str) -> ModelSpec:
    """The spec of a released InternVL checkpoint, derived offline from its written-down configs."""
    fields = config_spec_fields(config, INTERNVL_IMAGE_PROCESSOR, hub_id)
    return ModelSpec(name=name, **fields).replace(description=description)


INTERNVL3_1B = register_model(
    released_internvl(
        "internvl3-1b",
        "OpenGVLab/InternVL3-1B-hf",
        INTERNVL3_1B_CONFIG,
        "InternVL3-1B as released: InternViT-300M-448px-V2.5 + pixel shuffle 0.5 + LN-MLP + Qwen2.5-0.5B; "
        "up to 12 tiles of 448 px + a thumbnail, 256 tokens each",
    )
)

INTERNVL3_2B = register_model(
    released_internvl(
        "internvl3-2b",
        "OpenGVLab/InternVL3-2B-hf",
        INTERNVL3_2B_CONFIG,
        "InternVL3-2B as released: InternViT-300M-448px-V2.5 + pixel shuffle 0.5 + LN-MLP + Qwen2.5-1.5B; "
        "up to 12 tiles of 448 px + a thumbnail, 256 tokens each",
    )
)

# 32 px tiles of 8 px patches: 16 patches -> 4 tokens a tile; up to 6 tiles + a thumbnail. The built-in synthetic
# tokenizer has no <img> / </img>: ChatML's <|im_start|> / <|im_end|> frame each image instead.
TINY_INTERNVL = register_model(
    ModelSpec(
        name="tiny-internvl",
        family="internvl",
        description="InternVL layout in miniature: 2-block InternViT (32 px tiles, up to 6 + thumbnail), pixel shuffle "
        "0.5 + LN-MLP, 2-layer Qwen2, synthetic-task tokenizer",
        vision_model=TIMM_BASE,
        vision_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4},
        feature_layer=-1,
        projector=projector_name(2),
        llm_config={
            "model_type": "qwen2",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "tie_word_embeddings": False,
        },
        tokenizer="builtin:synthetic",
        template="chatml",
        image_tiling={"max_tiles": 6, "start_token": "<|im_start|>", "end_token": "<|im_end|>"},
    )
)
