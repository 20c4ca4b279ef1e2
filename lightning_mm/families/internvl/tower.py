"""InternViT (transformers' ``InternVLVisionModel``, ``model_type`` ``internvl_vision``) <-> timm's
``vit_intern300m_patch14_448`` family: config mapping and weight-name rules.

timm's ViT with a class token, learned position embeddings over CLS + patches, pre-norm blocks with layer scale
(``init_values``) and no final norm computes what transformers' InternViT computes when the config has
``norm_type="layer_norm"``, ``use_qk_norm=False``, ``use_mean_pooling=True`` (no final norm either) and absolute
position embeddings. Names: ``cls_token`` = ``embeddings.cls_token`` (both (1, 1, D)), ``pos_embed`` =
``embeddings.position_embeddings`` (both (1, 1 + N, D)), ``blocks.i.attn.qkv`` = ``encoder.layer.i.attention.{q,k,v}_proj``
(concatenated), ``attn.proj`` = ``attention.projection_layer``, ``norm1/2`` = ``layernorm_before/after``,
``ls1/2.gamma`` = ``lambda_1/2``. transformers' query/key norm is an RMSNorm over all heads together, timm's a norm per
head: InternViT-6B's ``use_qk_norm=True`` has no timm equivalent, so it is refused.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import InternVLVisionConfig, PretrainedConfig

from lightning_mm.interop.keys import KeyRule

__all__ = ["TIMM_BASE", "VISION_RULES", "internvit_config", "timm_kwargs"]

TIMM_BASE = "vit_intern300m_patch14_448"
LAYER_NORM_EPS = 1e-6  # timm's ViT LayerNorm
_ACTS = {"gelu": "gelu"}  # transformers hidden_act -> timm act_layer (exact GELU on both sides)

_LAYER, _ATTN = "encoder.layer.{i}.", "encoder.layer.{i}.attention."
VISION_RULES = (
    KeyRule.rename("cls_token", "embeddings.cls_token"),
    KeyRule.rename("pos_embed", "embeddings.position_embeddings"),
    KeyRule.rename("patch_embed.proj.{p}", "embeddings.patch_embeddings.projection.{p}"),
    KeyRule(("blocks.{i}.attn.qkv.{p}",), tuple(f"{_ATTN}{x}_proj.{{p}}" for x in "qkv"), (1,), (1, 1, 1)),
    KeyRule.rename("blocks.{i}.attn.proj.{p}", _ATTN + "projection_layer.{p}"),
    KeyRule.rename("blocks.{i}.norm1.{p}", _LAYER + "layernorm_before.{p}"),
    KeyRule.rename("blocks.{i}.norm2.{p}", _LAYER + "layernorm_after.{p}"),
    KeyRule.rename("blocks.{i}.ls1.gamma", _LAYER + "lambda_1"),
    KeyRule.rename("blocks.{i}.ls2.gamma", _LAYER + "lambda_2"),
    KeyRule.rename("blocks.{i}.mlp.fc1.{p}", _LAYER + "mlp.fc1.{p}"),
    KeyRule.rename("blocks.{i}.mlp.fc2.{p}", _LAYER + "mlp.fc2.{p}"),
)


def _square(value: Any, key: str, source: str) -> int:
    sides = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * 2
    if sides[0] != sides[1]:
        raise ValueError(f"{source}: vision_config.{key}={list(value)}; only square {key}s are supported.")
    return sides[0]


def timm_kwargs(config: PretrainedConfig, source: str) -> dict[str, Any]:
    """``timm.create_model`` keyword arguments giving ``vit_intern300m_patch14_448`` the geometry of ``config``.

    Raises:
        ValueError: naming the ``vision_config`` key timm's InternViT cannot compute.
    """
    refused = {
        "use_qk_norm": (config.use_qk_norm, False),
        "norm_type": (config.norm_type, "layer_norm"),
        "use_mean_pooling": (config.use_mean_pooling, True),
        "use_absolute_position_embeddings": (config.use_absolute_position_embeddings, True),
        "use_mask_token": (config.use_mask_token, False),
    }
    for key, (value, wanted) in refused.items():
        if value != wanted:
            raise ValueError(
                f"{source}: vision_config.{key}={value!r} is not supported (timm's InternViT computes {key}={wanted!r})."
            )
    if config.hidden_act not in _ACTS:
        raise ValueError(f"{source}: vision_config.hidden_act={config.hidden_act!r}; supported: {', '.join(_ACTS)}.")
    if abs(float(config.layer_norm_eps) - LAYER_NORM_EPS) > 1e-12:
        raise ValueError(f"{source}: vision_config.layer_norm_eps={config.layer_norm_eps}; timm's is {LAYER_NORM_EPS}.")
    mlp_ratio = config.intermediate_size / config.hidden_size
    if int(config.hidden_size * mlp_ratio) != config.intermediate_size:
        raise ValueError(f"{source}: vision_config.intermediate_size={config.intermediate_size} is not exact in timm.")
    return {
        "img_size": _square(config.image_size, "image_size", source),
        "patch_size": _square(config.patch_size, "patch_size", source),
        "embed_dim": int(config.hidden_size),
        "depth": int(config.num_hidden_layers),
        "num_heads": int(config.num_attention_heads),
        "mlp_ratio": mlp_ratio,
        "qkv_bias": bool(config.attention_bias),
        "init_values": float(config.layer_scale_init_value),
        "act_layer": _ACTS[config.hidden_act],
    }


def internvit_config(model: nn.Module) -> InternVLVisionConfig:
    """transformers' InternViT config of the timm ViT ``model``.

    Raises:
        ValueError: naming what transformers' InternViT cannot represent.
    """
    block = model.blocks[0]
    reasons = []
    if int(getattr(model, "num_prefix_tokens", 0)) != 1 or getattr(model, "cls_token", None) is None:
        reasons.append("no single class token")
    if not isinstance(getattr(block, "ls1", None), nn.Module) or not hasattr(block.ls1, "gamma"):
        reasons.append("no layer scale")
    if not isinstance(block.attn.q_norm, nn.Identity):
        reasons.append("a per-head query/key norm")
    if not isinstance(model.norm, nn.Identity) or not isinstance(
        getattr(model, "norm_pre", nn.Identity()), nn.Identity
    ):
        reasons.append("a final norm or pre-norm")
    act = block.mlp.act
    if type(act).__name__ != "GELU" or getattr(act, "approximate", "none") != "none":  # torch's or timm's exact GELU
        reasons.append(f"activation {act!r}")
    if reasons:
        raise ValueError(f"transformers' InternViT cannot represent this timm tower: {', '.join(reasons)}.")
    img, patch = model.patch_embed.img_size, model.patch_embed.patch_size
    return InternVLVisionConfig(
        hidden_size=int(model.embed_dim),
        intermediate_size=int(block.mlp.fc1.out_features),
        num_hidden_layers=len(model.blocks),
        num_attention_heads=int(block.attn.num_heads),
        attention_bias=block.attn.qkv.bias is not None,
        use_qk_norm=False,
        hidden_act="gelu",
        norm_type="layer_norm",
        layer_norm_eps=float(block.norm1.eps),
        image_size=[int(img[0]), int(img[1])],
        patch_size=[int(patch[0]), int(patch[1])],
        layer_scale_init_value=0.1,  # an init value only: the weights carry the trained scales
        use_mean_pooling=True,
        use_absolute_position_embeddings=True,
    )
