"""InternVL3-1B / InternVL3-2B (Zhu et al., "InternVL3: Exploring Advanced Training and Test-Time Recipes for
Open-Source Multimodal Models") and a miniature for tests.

The released ``-hf`` checkpoints are transformers' InternVL (``model_type`` ``internvl``): InternViT-300M-448px-V2.5
(timm ``vit_intern300m_patch14_448``) read at its last block, CLS dropped, pixel shuffle 0.5 (1024 patches -> 256
tokens a 448 px tile), LayerNorm -> Linear -> GELU -> Linear, and Qwen2.5-0.5B / Qwen2.5-1.5B (transformers' Qwen2)
with 151,674 embedding rows and an untied ``lm_head``. Images are cut into up to 12 tiles + a thumbnail
(:class:`~lightning_mm.families.internvl.layout.InternVLLayout`); the chat format is ``chatml``.

Where the configs below come from: the ``config.json`` of ``OpenGVLab/InternVL3-1B-hf`` / ``OpenGVLab/InternVL3-2B-hf``
cannot be read here. They are written down as transformers' conversion script
``src/transformers/models/internvl/convert_internvl_weights_to_hf.py`` (huggingface/transformers, commit 015d3b27)
writes them from the original ``OpenGVLab/InternVL3-1B`` / ``-2B`` configs: it keeps the original ``llm_config`` (Qwen2
for both) and ``vision_config``, renames ``qkv_bias`` -> ``attention_bias`` and ``qk_normalization`` ->
``use_qk_norm``, sets ``use_absolute_position_embeddings`` true, ``image_token_id`` 151,667 (``<IMG_CONTEXT>``) and,
for InternVL3 on Qwen2, ``eos_token_id`` 151,645; its image processor is 448 px, ImageNet mean / std, 1 to 12 tiles.
The original InternVL3-1B config, as printed by ``AutoModel.from_pretrained("OpenGVLab/InternVL3-1B",
trust_remote_code=True).config`` (a copy in the public repository shivangjhalani/multicoco, ``InternVL3-1B_data.md``;
the same numbers are transformers' default InternVL text config in its PR #35968): ``llm_config`` Qwen2 896 wide, 24
layers, 14 heads, 2 KV heads, MLP 4,864, RMSNorm eps 1e-6, ``rope_theta`` 1e6, 32,768 positions, vocabulary 151,674;
``tie_word_embeddings`` false; ``vision_config`` InternViT-300M (1,024 wide, 24 layers, 16 heads, MLP 4,096, 448 px,
patch 14, ``qkv_bias`` true, ``qk_normalization`` false, LayerNorm eps 1e-6, GELU); ``use_thumbnail`` true, 1 to 12
tiles, ``downsample_ratio`` 0.5, ``select_layer`` -1. InternVL3-2B is the same tower and projector on Qwen2.5-1.5B
(the InternVL3 model card): 1,536 wide, 28 layers, 12 heads, 2 KV heads, MLP 8,960 (``Qwen/Qwen2.5-1.5B-Instruct``'s
``config.json``, read in a public mirror, ``onnx-community/Qwen2.5-1.5B-Instruct``); its vocabulary (151,674) and
untied ``lm_head`` are taken from the 1B's config (the same tokenizer and recipe), not read from a 2B file. The
originals' dynamic RoPE scaling (factor 2) only acts past 32,768 positions and is left out. ``pretrained=True`` loads
the released checkpoint through the ``hf:`` import path (its own config then rules).
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

# InternViT-300M-448px-V2.5 as transformers' InternVLVisionConfig (architecture entries; layer scale: the script maps
# the originals' ls1 / ls2 to lambda_1 / lambda_2; mean pooling: InternVLVisionConfig's default, not read by the VLM).
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

# OpenGVLab/InternVL3-1B-hf, as convert_internvl_weights_to_hf.py writes it from the original config (module docstring)
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

# OpenGVLab/InternVL3-2B-hf: the same tower and projector with Qwen2.5-1.5B (module docstring)
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
# tokenizer is laid out with InternVL's <img> / </img> (ids 64, 65, past the task's words and reserved tokens), which
# frame each image as in InternVL; <image> is the context token.
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
        image_tiling={"max_tiles": 6},
        special_token_ids={"<img>": 64, "</img>": 65},
    )
)
