"""LLaVA-1.5 (Liu et al., "Improved Baselines with Visual Instruction Tuning"): CLIP ViT-L/14-336 + MLP + Vicuna-v1.5.

Two ways in, the same network:

- ``llava-1.5-7b`` / ``llava-1.5-13b``: the released VLMs. ``pretrained=True`` loads ``llava-hf/llava-1.5-{7b,13b}-hf``
  (transformers' ``LlavaForConditionalGeneration``) through :mod:`lightning_mm.interop`; the spec is derived from the
  released ``config.json`` and image-processor settings written down below, so it builds offline (``hf:llava-hf/...``
  gives the same entry). Use these to fine-tune LLaVA-1.5.
- ``llava-1.5-7b-components`` / ``llava-1.5-13b-components``: the reproduction of LLaVA-1.5's training, which starts
  from the components: ``pretrained=True`` loads OpenAI's CLIP through timm and ``lmsys/vicuna-*-v1.5`` through
  transformers (embeddings resized to 32064 rows), the projector from LLaVA's stage-1 ``mm_projector.bin`` when
  ``projector_weights`` is set (``recipes/llava_v15``).

The tower is OpenAI's CLIP ViT-L/14 at 336 px (QuickGELU, as trained; timm's ``vit_large_patch14_clip_336`` defaults to
GELU), read at the second-to-last block with the CLS token dropped (24 x 24 = 576 tokens per image); the projector is
``mlp2x_gelu``; the LM is Vicuna-v1.5 with its embeddings grown from 32000 to 32064 rows (``<image>`` at 32000, then
padding to a multiple of 64). The data uses ``plain`` for stage 1 and ``vicuna_v1`` after.
"""

from typing import Any

from lightning_mm.interop.checkpoint import config_spec_fields
from lightning_mm.zoo.llms import VICUNA_7B_V15, VICUNA_13B_V15
from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

LLAVA_VOCAB_SIZE = 32064  # 32000 + <image> (id 32000), padded to a multiple of 64
LLAVA_IMAGE_TOKEN_ID = 32000

# llava-hf/llava-1.5-7b-hf config.json (architecture entries; transformers fills the rest with its defaults).
LLAVA_15_7B_HF_CONFIG: dict[str, Any] = {
    "architectures": ["LlavaForConditionalGeneration"],
    "model_type": "llava",
    "ignore_index": -100,
    "image_token_index": LLAVA_IMAGE_TOKEN_ID,
    "image_seq_length": 576,
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "tie_word_embeddings": False,
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "text_config": {
        "_name_or_path": "lmsys/vicuna-7b-v1.5",
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "rms_norm_eps": 1e-05,
        "vocab_size": LLAVA_VOCAB_SIZE,
    },
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vocab_size": LLAVA_VOCAB_SIZE,
}

# llava-hf/llava-1.5-13b-hf config.json: the same with Vicuna-13B.
LLAVA_15_13B_HF_CONFIG: dict[str, Any] = {
    **LLAVA_15_7B_HF_CONFIG,
    "text_config": {
        **LLAVA_15_7B_HF_CONFIG["text_config"],
        "_name_or_path": "lmsys/vicuna-13b-v1.5",
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_attention_heads": 40,
        "num_hidden_layers": 40,
        "num_key_value_heads": 40,
    },
}

# their image processor (CLIPImageProcessor): short side to 336, 336 x 336 centre crop, bicubic, OpenAI CLIP mean/std
LLAVA_15_HF_IMAGE_PROCESSOR: dict[str, Any] = {
    "crop_size": {"height": 336, "width": 336},
    "do_center_crop": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": {"shortest_edge": 336},
}


def released_llava(name: str, hub_id: str, config: dict[str, Any], image_processor: dict[str, Any]) -> ModelSpec:
    """The spec of a released transformers LLaVA checkpoint, derived offline from its written-down configs."""
    return ModelSpec(name=name, **config_spec_fields(config, image_processor, hub_id))


LLAVA_15_7B = register_model(
    released_llava(
        "llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", LLAVA_15_7B_HF_CONFIG, LLAVA_15_HF_IMAGE_PROCESSOR
    ).replace(
        description="LLaVA-1.5 7B as released (llava-hf/llava-1.5-7b-hf): CLIP ViT-L/14-336 + mlp2x_gelu + Vicuna-7B",
        vision_model="vit_large_patch14_clip_336",
    )
)

LLAVA_15_13B = register_model(
    released_llava(
        "llava-1.5-13b", "llava-hf/llava-1.5-13b-hf", LLAVA_15_13B_HF_CONFIG, LLAVA_15_HF_IMAGE_PROCESSOR
    ).replace(
        description="LLaVA-1.5 13B as released (llava-hf/llava-1.5-13b-hf): CLIP ViT-L/14-336 + mlp2x_gelu + "
        "Vicuna-13B",
        vision_model="vit_large_patch14_clip_336",
    )
)

LLAVA_15_7B_COMPONENTS = register_model(
    ModelSpec(
        name="llava-1.5-7b-components",
        description="LLaVA-1.5 7B from its components (training reproduction): OpenAI CLIP ViT-L/14-336 (layer -2, "
        "576 patch tokens) + mlp2x_gelu + Vicuna-7B-v1.5",
        vision_model="vit_large_patch14_clip_336.openai",
        vision_kwargs={"act_layer": "quick_gelu"},
        feature_layer=-2,
        drop_prefix_tokens=True,
        projector="mlp2x_gelu",
        llm="lmsys/vicuna-7b-v1.5",
        llm_config={**VICUNA_7B_V15, "vocab_size": LLAVA_VOCAB_SIZE},
        template="vicuna_v1",
        image_token="<image>",
        image_token_id=LLAVA_IMAGE_TOKEN_ID,
    )
)

LLAVA_15_13B_COMPONENTS = register_model(
    LLAVA_15_7B_COMPONENTS.replace(
        name="llava-1.5-13b-components",
        description="LLaVA-1.5 13B from its components (training reproduction): OpenAI CLIP ViT-L/14-336 (layer -2, "
        "576 patch tokens) + mlp2x_gelu + Vicuna-13B-v1.5",
        llm="lmsys/vicuna-13b-v1.5",
        llm_config={**VICUNA_13B_V15, "vocab_size": LLAVA_VOCAB_SIZE},
    )
)
