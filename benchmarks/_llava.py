"""The LLaVA-1.5 architecture at benchmark size, on both sides: lightning_mm's network and transformers' LLaVA.

Shared by the benchmarks that compare the two. Both are built from configs (random init, nothing is downloaded):

* ours: the ``tiny`` zoo entry with a CLIP-style timm ViT (pre-norm, QuickGELU, CLS token; features of block -2, CLS
  dropped), the ``mlp2x_gelu`` projector and a Llama LLM;
* transformers: ``LlavaForConditionalGeneration`` with the matching ``CLIPVisionConfig`` (``vision_feature_layer=-2``,
  ``"default"`` select strategy) and ``LlamaConfig``.

To run the very same weights on both sides, ``lightning_mm.interop.to_hf_model`` converts our network. The size options (``args``) are those of ``benchmarks/train_step.py``: ``image_size``, ``patch_size``,
``vision_dim``, ``vision_depth``, ``vision_heads``, ``hidden``, ``layers``, ``heads``, ``intermediate``, ``vocab``,
``text_tokens``.
"""

from __future__ import annotations

import argparse
from typing import Any

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

__all__ = ["add_size_args", "hf_llava_config", "image_tokens", "llama_config", "ours_overrides"]


def add_size_args(parser: argparse.ArgumentParser, batch: int, text_tokens: int, text_help: str) -> None:
    """Add the model and input size options shared by the benchmarks (LLaVA-1.5's geometry at a small width)."""
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--patch-size", type=int, default=14)
    parser.add_argument("--vision-dim", type=int, default=384, help="ViT width (MLP: 4x)")
    parser.add_argument("--vision-depth", type=int, default=6)
    parser.add_argument("--vision-heads", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512, help="LLM width")
    parser.add_argument("--layers", type=int, default=4, help="LLM decoder layers")
    parser.add_argument("--heads", type=int, default=8, help="LLM attention heads (= key/value heads)")
    parser.add_argument("--intermediate", type=int, default=1376, help="LLM MLP width")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--text-tokens", type=int, default=text_tokens, help=text_help)


def image_tokens(args: argparse.Namespace) -> int:
    """Patch tokens of one image: (image_size / patch_size)^2 (576 at 336 px, patch 14)."""
    return (args.image_size // args.patch_size) ** 2


def llama_config(args: argparse.Namespace) -> dict:
    """The LLM's config as a ``model_type: llama`` dict (lightning_mm's ``llm_config``)."""
    return {
        "model_type": "llama",
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.heads,
        "max_position_embeddings": max(2048, image_tokens(args) + args.text_tokens),
        "vocab_size": args.vocab,
        "tie_word_embeddings": False,
    }


def ours_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``model_overrides`` of the ``tiny`` entry that give the LLaVA-1.5 layout at benchmark size."""
    return {
        # CLIP-style timm ViT (pre-norm, QuickGELU, CLS token), resized: same layout as HF's CLIPVisionModel
        "vision_model": "vit_base_patch16_clip_quickgelu_224",
        "vision_kwargs": {
            "img_size": args.image_size,
            "patch_size": args.patch_size,
            "embed_dim": args.vision_dim,
            "depth": args.vision_depth,
            "num_heads": args.vision_heads,
        },
        "feature_layer": -2,
        "drop_prefix_tokens": True,
        "projector": "mlp2x_gelu",
        "llm_config": llama_config(args),
    }


def hf_llava_config(args: argparse.Namespace, image_token_id: int):
    """transformers' ``LlavaConfig`` of the same architecture."""
    vision = CLIPVisionConfig(
        hidden_size=args.vision_dim,
        intermediate_size=4 * args.vision_dim,
        num_hidden_layers=args.vision_depth,
        num_attention_heads=args.vision_heads,
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text_kwargs = llama_config(args)
    text_kwargs.pop("model_type")
    return LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**text_kwargs),
        image_token_id=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
