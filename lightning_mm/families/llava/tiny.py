"""Tiny models that build in a second: the quickstart model and one miniature per vision family for tests.

All use a 2-layer Llama and the built-in synthetic-task tokenizer (offline). The quickstart's ``tiny`` has a
CLIP-style tower (class token, pre-norm, patch embedding without bias, exact GELU; CLS dropped), which transformers'
``CLIPVisionModel`` represents, so a trained ``tiny`` exports to ``LlavaForConditionalGeneration``. The miniatures keep
what matters of their family: ``tiny-llava`` LLaVA-1.5's CLIP tower (QuickGELU), ``tiny-siglip`` a tower without
prefix tokens (nothing may be dropped), ``tiny-dinov2-reg`` a tower with CLS + 4 register tokens.
"""

from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}

# 32 px images, 8 px patches: 4 x 4 = 16 patch tokens per image.
TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 4}

TINY = register_model(
    ModelSpec(
        name="tiny",
        description="quickstart: 3-block CLIP-style ViT (32px, patch 8) + 2-layer Llama, synthetic-task tokenizer",
        vision_model="vit_base_patch16_clip_224",
        vision_kwargs=TINY_VIT,
        feature_layer=-2,
        projector="mlp2x_gelu",
        llm_config=TINY_LLAMA,
        tokenizer="builtin:synthetic",
        template="chatml",
    )
)

register_model(
    TINY.replace(
        name="tiny-llava",
        description="LLaVA-1.5 layout in miniature: CLIP-style ViT (pre-norm, QuickGELU, CLS dropped) + 2-layer Llama",
        vision_model="vit_base_patch16_clip_quickgelu_224",
    )
)

register_model(
    TINY.replace(
        name="tiny-siglip",
        description="SigLIP-style ViT in miniature (no CLS token: all 16 patch tokens kept, tanh GELU) + 2-layer Llama",
        vision_model="vit_base_patch16_siglip_224",
        vision_kwargs={"act_layer": "gelu_tanh"},
    )
)

register_model(
    TINY.replace(
        name="tiny-dinov2-reg",
        description="DINOv2-with-registers ViT in miniature (CLS + 4 registers dropped) + 2-layer Llama",
        vision_model="vit_small_patch14_reg4_dinov2",
    )
)
