"""Any-resolution LLaVA: LLaVA-NeXT (LLaVA-1.6) and LLaVA-OneVision, as released in transformers' format.

- ``llava-next-vicuna-7b``: ``llava-hf/llava-v1.6-vicuna-7b-hf``. CLIP ViT-L/14-336 (layer -2, CLS dropped, 576 tokens
  a tile) + ``mlp2x_gelu`` + Vicuna-7B-v1.5; images tiled on the best fit of five grids (1 x 2, 2 x 1, 2 x 2, 3 x 1,
  1 x 3 tiles of 336 px) plus a base view, unpadded, a newline embedding after each row; ``vicuna_v1`` chat format.
- ``llava-onevision-0.5b``: ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf``. SigLIP So400m/14-384 without its last block
  and head (26 blocks, all 729 tokens a tile) + ``mlp2x_gelu`` + Qwen2-0.5B-Instruct (tied embeddings, 152000 rows);
  grids up to 6 x 6 tiles of 384 px, capped at 9 tiles' worth of tokens (``anyres_max_9``, bilinear); ChatML.
- ``tiny-llava-next``, ``tiny-llava-onevision``: the same layouts in miniature for tests (32 px tiles of 4 x 4 tokens).

The specs are derived offline from the released ``config.json`` and image-processor settings written down below
(:func:`~lightning_mm.families.llava.zoo.released_llava`); ``pretrained=True`` loads the released checkpoint through
:mod:`lightning_mm.interop`. Sources: llava-hf/llava-v1.6-vicuna-7b-hf ``config.json`` (commit 78d9aec) and
``preprocessor_config.json``; llava-hf/llava-onevision-qwen2-0.5b-ov-hf ``config.json`` as transformers' conversion
script writes it (SigLIP geometry, ``text_config`` of Qwen2-0.5B-Instruct with the vocabulary grown by ``<image>`` and
``<video>`` and padded to a multiple of 64).
"""

from typing import Any

from lightning_mm.families.llava.tiny import TINY
from lightning_mm.families.llava.zoo import (
    LLAVA_15_7B_HF_CONFIG,
    LLAVA_15_HF_IMAGE_PROCESSOR,
    LLAVA_IMAGE_TOKEN_ID,
    LLAVA_VOCAB_SIZE,
    released_llava,
)
from lightning_mm.zoo.registry import register_model

__all__ = ["LLAVA_NEXT_VICUNA_7B_HF_CONFIG", "LLAVA_ONEVISION_0_5B_HF_CONFIG"]

NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
OV_PINPOINTS = [[384 * rows, 384 * cols] for rows in range(1, 7) for cols in range(1, 7)]

# llava-hf/llava-v1.6-vicuna-7b-hf config.json (architecture entries; transformers fills the rest with its defaults)
LLAVA_NEXT_VICUNA_7B_HF_CONFIG: dict[str, Any] = {
    "architectures": ["LlavaNextForConditionalGeneration"],
    "model_type": "llava_next",
    "ignore_index": -100,
    "image_grid_pinpoints": NEXT_PINPOINTS,
    "image_token_index": LLAVA_IMAGE_TOKEN_ID,
    "projector_hidden_act": "gelu",
    "use_image_newline_parameter": True,
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    # the Vicuna-7B and CLIP ViT-L/14-336 of LLaVA-1.5's config (its text config also names pad_token_id 0)
    "text_config": {**LLAVA_15_7B_HF_CONFIG["text_config"], "pad_token_id": 0},
    "vision_config": LLAVA_15_7B_HF_CONFIG["vision_config"],
    "vocab_size": LLAVA_VOCAB_SIZE,
}

# its LlavaNextImageProcessor: LLaVA-1.5's CLIP settings (336 px, bicubic, OpenAI CLIP mean/std) and the pinpoints
LLAVA_NEXT_HF_IMAGE_PROCESSOR: dict[str, Any] = {**LLAVA_15_HF_IMAGE_PROCESSOR, "image_grid_pinpoints": NEXT_PINPOINTS}

QWEN2_OV_IMAGE_TOKEN_ID = 151646  # <image>; <video> is 151647

# llava-hf/llava-onevision-qwen2-0.5b-ov-hf config.json
LLAVA_ONEVISION_0_5B_HF_CONFIG: dict[str, Any] = {
    "architectures": ["LlavaOnevisionForConditionalGeneration"],
    "model_type": "llava_onevision",
    "ignore_index": -100,
    "image_grid_pinpoints": OV_PINPOINTS,
    "image_token_index": QWEN2_OV_IMAGE_TOKEN_ID,
    "video_token_index": QWEN2_OV_IMAGE_TOKEN_ID + 1,
    "projector_hidden_act": "gelu",
    "tie_word_embeddings": True,
    "use_image_newline_parameter": True,
    "vision_aspect_ratio": "anyres_max_9",
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "full",
    "text_config": {
        "_name_or_path": "Qwen/Qwen2-0.5B-Instruct",
        "architectures": ["Qwen2ForCausalLM"],
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "max_position_embeddings": 32768,
        "max_window_layers": 24,
        "model_type": "qwen2",
        "num_attention_heads": 14,
        "num_hidden_layers": 24,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "vocab_size": 152000,
    },
    "vision_config": {
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "image_size": 384,
        "intermediate_size": 4304,
        "layer_norm_eps": 1e-06,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 26,
        "patch_size": 14,
        "vision_use_head": False,
    },
}

# its LlavaOnevisionImageProcessor: 384 x 384, bicubic, SigLIP's mean and std of 0.5
LLAVA_ONEVISION_HF_IMAGE_PROCESSOR: dict[str, Any] = {
    "do_center_crop": False,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 3,
    "size": {"height": 384, "width": 384},
    "image_grid_pinpoints": OV_PINPOINTS,
}

LLAVA_NEXT_VICUNA_7B = register_model(
    released_llava(
        "llava-next-vicuna-7b",
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        LLAVA_NEXT_VICUNA_7B_HF_CONFIG,
        LLAVA_NEXT_HF_IMAGE_PROCESSOR,
    ).replace(
        description="LLaVA-NeXT 7B as released (llava-hf/llava-v1.6-vicuna-7b-hf): CLIP ViT-L/14-336 tiles "
        "(anyres, 5 grids) + mlp2x_gelu + Vicuna-7B",
        vision_model="vit_large_patch14_clip_336",
    )
)

LLAVA_ONEVISION_0_5B = register_model(
    released_llava(
        "llava-onevision-0.5b",
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        LLAVA_ONEVISION_0_5B_HF_CONFIG,
        LLAVA_ONEVISION_HF_IMAGE_PROCESSOR,
    ).replace(
        description="LLaVA-OneVision 0.5B as released (llava-hf/llava-onevision-qwen2-0.5b-ov-hf): SigLIP So400m/14-384 "
        "tiles (anyres_max_9) + mlp2x_gelu + Qwen2-0.5B",
        vision_model="vit_so400m_patch14_siglip_384",
    )
)

# 32 px tiles of 8 px patches (4 x 4 tokens), grids up to 2 x 2 (NeXT) / 3 x 3 capped at 4 tiles (OneVision)
TINY_TILE = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 4}

register_model(
    TINY.replace(
        name="tiny-llava-next",
        description="LLaVA-NeXT tiling in miniature: 32 px tiles (16 tokens), 1 x 2 / 2 x 1 / 2 x 2 grids + 2-layer Llama",
        vision_model="vit_base_patch16_clip_quickgelu_224",
        vision_kwargs=TINY_TILE,
        image_tiling={"grid_pinpoints": [[32, 64], [64, 32], [64, 64]]},
        family="llava_next",
    )
)

register_model(
    TINY.replace(
        name="tiny-llava-onevision",
        description="LLaVA-OneVision tiling in miniature: SigLIP-style 32 px tiles, grids up to 3 x 3 capped at 4 tiles",
        vision_model="vit_base_patch16_siglip_224",
        vision_kwargs={**TINY_TILE, "act_layer": "gelu_tanh"},
        image_tiling={
            "grid_pinpoints": [[32 * r, 32 * c] for r in (1, 2, 3) for c in (1, 2, 3)],
            "vision_aspect_ratio": "anyres_max_4",
        },
        family="llava_next",
    )
)
