"""The LLaVA-1.5 architecture at benchmark size, on both sides: lightning_mm's network and transformers' LLaVA.

Shared by the benchmarks that compare the two. Both are built from configs (random init, nothing is downloaded):

* ours: the ``tiny`` zoo entry with a CLIP-style timm ViT (pre-norm, QuickGELU, CLS token; features of block -2, CLS
  dropped), the ``mlp2x_gelu`` projector and a Llama LLM;
* transformers: ``LlavaForConditionalGeneration`` with the matching ``CLIPVisionConfig`` (``vision_feature_layer=-2``,
  ``"default"`` select strategy) and ``LlamaConfig``.

:func:`hf_state_dict_from_ours` renames (and splits) our weights into transformers' names, so the two can run the very
same weights. The size options (``args``) are those of ``benchmarks/train_step.py``: ``image_size``, ``patch_size``,
``vision_dim``, ``vision_depth``, ``vision_heads``, ``hidden``, ``layers``, ``heads``, ``intermediate``, ``vocab``,
``text_tokens``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

__all__ = ["hf_llava_config", "hf_state_dict_from_ours", "image_tokens", "llama_config", "ours_overrides"]


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
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

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


_VISION_BLOCK = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "self_attn.out_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_VISION_TOP = {
    "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
    "norm_pre.weight": "pre_layrnorm.weight",
    "norm_pre.bias": "pre_layrnorm.bias",
    "norm.weight": "post_layernorm.weight",
    "norm.bias": "post_layernorm.bias",
}


def hf_state_dict_from_ours(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our network's weights under ``LlavaForConditionalGeneration``'s names (transformers 5 layout).

    timm's fused ``qkv`` is split into ``q_proj``/``k_proj``/``v_proj``; ``cls_token`` (1, 1, D) becomes
    ``class_embedding`` (D); ``pos_embed`` (1, N + 1, D) ``position_embedding.weight`` (N + 1, D); the projector's
    ``0``/``2`` are ``linear_1``/``linear_2``; the LLM's ``model.*`` is ``model.language_model.*``.
    """
    out: dict[str, torch.Tensor] = {}
    tower = "model.vision_tower."
    for name, value in network.vision.model.state_dict().items():
        if name == "cls_token":
            out[tower + "embeddings.class_embedding"] = value.reshape(-1)  # (D,)
        elif name == "pos_embed":
            out[tower + "embeddings.position_embedding.weight"] = value[0]  # (N + 1, D)
        elif name in _VISION_TOP:
            out[tower + _VISION_TOP[name]] = value
        elif name.startswith("blocks."):
            _, index, rest = name.split(".", 2)
            prefix = f"{tower}encoder.layers.{index}."
            module, _, kind = rest.rpartition(".")
            if module == "attn.qkv":
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{part}.{kind}"] = chunk  # (D, D) / (D,)
            elif module in _VISION_BLOCK:
                out[f"{prefix}{_VISION_BLOCK[module]}.{kind}"] = value
            else:
                raise KeyError(f"no transformers name for vision weight {name!r}")
        else:
            raise KeyError(f"no transformers name for vision weight {name!r}")
    for name, value in network.projector.state_dict().items():
        index, kind = name.split(".")
        out[f"model.multi_modal_projector.linear_{1 if index == '0' else 2}.{kind}"] = value
    for name, value in network.llm.state_dict().items():
        out[name.replace("model.", "model.language_model.", 1) if name.startswith("model.") else name] = value
    return out
