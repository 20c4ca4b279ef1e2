"""Tiny models that build in a second: the quickstart model and the test model."""

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

register_model(
    ModelSpec(
        name="tiny",
        description="quickstart: 3-block ViT (32px, patch 8) + 2-layer Llama, synthetic-task tokenizer",
        vision_model="vit_tiny_patch16_224",
        vision_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 4},
        feature_layer=-2,
        projector="mlp2x_gelu",
        llm_config=TINY_LLAMA,
        tokenizer="builtin:synthetic",
        template="chatml",
    )
)
