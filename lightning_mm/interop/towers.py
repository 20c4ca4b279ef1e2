"""Vision-tower families transformers and timm both implement: config mapping and weight-name rules per family.

A family knows how to build the timm ViT of the same geometry as a transformers vision config, how to write that
config back from a timm model, and the :class:`~lightning_mm.interop.keys.KeyRule` list between the two weight
layouts (names relative to the tower: timm's model, transformers' vision model without ``vision_model.``). New families
register with :func:`register_tower`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import CLIPVisionConfig, PretrainedConfig, SiglipVisionConfig

from lightning_mm.interop.keys import KeyRule

__all__ = ["TowerFamily", "list_towers", "register_tower", "tower_for_hf", "tower_for_timm"]

# transformers `hidden_act` <-> timm `act_layer` (the activations both sides compute identically)
_ACT_TO_TIMM = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh"}
_ACT_FROM_TIMM = {"QuickGELU": "quick_gelu", "GELU": "gelu", "GELUTanh": "gelu_pytorch_tanh"}


def _encoder_rules() -> list[KeyRule]:
    """Transformer blocks, shared by CLIP and SigLIP: fused ``qkv`` against ``q/k/v_proj``."""
    layer = "encoder.layers.{i}."
    attn = layer + "self_attn."
    return [
        KeyRule(("blocks.{i}.attn.qkv.{p}",), tuple(f"{attn}{x}_proj.{{p}}" for x in "qkv"), (1,), (1, 1, 1)),
        KeyRule.rename("blocks.{i}.attn.proj.{p}", attn + "out_proj.{p}"),
        KeyRule.rename("blocks.{i}.norm1.{p}", layer + "layer_norm1.{p}"),
        KeyRule.rename("blocks.{i}.norm2.{p}", layer + "layer_norm2.{p}"),
        KeyRule.rename("blocks.{i}.mlp.fc1.{p}", layer + "mlp.fc1.{p}"),
        KeyRule.rename("blocks.{i}.mlp.fc2.{p}", layer + "mlp.fc2.{p}"),
        KeyRule.rename("norm.{p}", "post_layernorm.{p}"),
    ]


@dataclass(frozen=True)
class TowerFamily:
    """A ViT family with the same network in timm and transformers.

    Attributes:
        name: Family name (``clip``, ``siglip``).
        hf_model_type: ``model_type`` of transformers' vision config.
        hf_config_class: transformers' vision config class.
        timm_base: timm architecture whose defaults match the family (class token, pre-norm, norm eps, patch bias);
            geometry is set through keyword arguments.
        num_prefix_tokens: Tokens the family puts before the patch tokens (CLS: 1).
        layer_norm_eps: LayerNorm eps of ``timm_base``.
        rules: Weight-name rules, timm names <-> transformers names.
        pre_norm: A LayerNorm before the blocks (CLIP's ``pre_layrnorm``, timm's ``norm_pre``).
        patch_bias: The patch embedding has a bias.
        optional_head: The attention-pool head exists only when the config's ``vision_use_head`` is set (SigLIP).
    """

    name: str
    hf_model_type: str
    hf_config_class: type[PretrainedConfig]
    timm_base: str
    num_prefix_tokens: int
    layer_norm_eps: float
    rules: tuple[KeyRule, ...]
    pre_norm: bool = False
    patch_bias: bool = True
    optional_head: bool = False

    # ------------------------------------------------------------ transformers config -> timm
    def timm_kwargs(self, config: PretrainedConfig) -> dict[str, Any]:
        """``timm.create_model`` keyword arguments giving ``timm_base`` the geometry of ``config``.

        Raises:
            ValueError: for an activation or norm eps timm's model of this family cannot compute.
        """
        act = _ACT_TO_TIMM.get(config.hidden_act)
        if act is None:
            raise ValueError(
                f"{self.name} vision config: hidden_act={config.hidden_act!r} has no timm equivalent "
                f"(supported: {', '.join(_ACT_TO_TIMM)})."
            )
        if abs(config.layer_norm_eps - self.layer_norm_eps) > 1e-12:
            raise ValueError(
                f"{self.name} vision config: layer_norm_eps={config.layer_norm_eps} differs from timm's "
                f"{self.timm_base} ({self.layer_norm_eps})."
            )
        mlp_ratio = config.intermediate_size / config.hidden_size
        if int(config.hidden_size * mlp_ratio) != config.intermediate_size:  # timm's MLP width: int(D * ratio)
            raise ValueError(f"{self.name} vision config: intermediate_size {config.intermediate_size} is not exact.")
        kwargs = {
            "img_size": int(config.image_size),
            "patch_size": int(config.patch_size),
            "embed_dim": int(config.hidden_size),
            "depth": int(config.num_hidden_layers),
            "num_heads": int(config.num_attention_heads),
            "mlp_ratio": mlp_ratio,
            "act_layer": act,
        }
        if self.optional_head:  # timm's attention pool ("map") is transformers' head; "" builds none
            kwargs["global_pool"] = "map" if getattr(config, "vision_use_head", True) else ""
        return kwargs

    # ------------------------------------------------------------ timm -> transformers config
    def matches(self, model: nn.Module) -> bool:
        """Whether the timm model has this family's layout (prefix tokens, pre-norm, patch bias)."""
        pre_norm = not isinstance(getattr(model, "norm_pre", nn.Identity()), nn.Identity)
        patch_bias = getattr(model.patch_embed.proj, "bias", None) is not None
        prefix = int(getattr(model, "num_prefix_tokens", 0))
        return (prefix, pre_norm, patch_bias) == (self.num_prefix_tokens, self.pre_norm, self.patch_bias)

    def hf_config(self, model: nn.Module) -> PretrainedConfig:
        """transformers' vision config of the timm model ``model`` (checked with :func:`tower_for_timm`)."""
        block = model.blocks[0]
        act = _ACT_FROM_TIMM.get(type(block.mlp.act).__name__)
        if act is None or (act == "gelu" and getattr(block.mlp.act, "approximate", "none") != "none"):
            raise ValueError(f"timm tower activation {block.mlp.act!r} has no transformers {self.name} equivalent.")
        img = model.patch_embed.img_size
        patch = model.patch_embed.patch_size
        if img[0] != img[1] or patch[0] != patch[1]:
            raise ValueError(f"transformers' {self.name} tower needs square images and patches, got {img} / {patch}.")
        kwargs: dict[str, Any] = {
            "hidden_size": int(model.embed_dim),
            "intermediate_size": int(block.mlp.fc1.out_features),
            "num_hidden_layers": len(model.blocks),
            "num_attention_heads": int(block.attn.num_heads),
            "image_size": int(img[0]),
            "patch_size": int(patch[0]),
            "hidden_act": act,
            "layer_norm_eps": float(block.norm1.eps),
        }
        if self.optional_head:
            kwargs["vision_use_head"] = getattr(model, "attn_pool", None) is not None
        return self.hf_config_class(**kwargs)


_TOWERS: dict[str, TowerFamily] = {}


def register_tower(family: TowerFamily) -> TowerFamily:
    """Add a tower family (looked up by transformers' vision ``model_type`` and by timm layout)."""
    _TOWERS[family.hf_model_type] = family
    return family


def list_towers() -> list[str]:
    """transformers vision ``model_type``s with a registered family."""
    return sorted(_TOWERS)


def tower_for_hf(model_type: str) -> TowerFamily:
    """The family of transformers' vision config ``model_type`` (``clip_vision_model``, ``siglip_vision_model``)."""
    if model_type not in _TOWERS:
        raise ValueError(
            f"Unsupported vision tower {model_type!r}: lightning_mm converts {', '.join(list_towers())} towers."
        )
    return _TOWERS[model_type]


def _unsupported_timm_features(model: nn.Module) -> list[str]:
    reasons = []
    if int(getattr(model, "num_reg_tokens", 0) or 0):
        reasons.append(f"{model.num_reg_tokens} register tokens")
    block = model.blocks[0]
    if not isinstance(getattr(block, "ls1", nn.Identity()), nn.Identity):
        reasons.append("layer scale")
    if not isinstance(getattr(block.attn, "q_norm", nn.Identity()), nn.Identity):
        reasons.append("query/key norm")
    if not isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity):
        reasons.append("a pooled-feature norm (fc_norm)")
    if getattr(model, "no_embed_class", False) and getattr(model, "cls_token", None) is not None:
        reasons.append("a class token without a position embedding")
    if type(block).__name__ != "Block":
        reasons.append(f"{type(block).__name__} blocks")
    return reasons


def tower_for_timm(model: nn.Module, model_name: str = "") -> TowerFamily:
    """The family whose transformers model computes what the timm ViT ``model`` computes.

    Raises:
        ValueError: naming what transformers' towers cannot represent (register tokens, layer scale, ...).
    """
    label = model_name or type(model).__name__
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise ValueError(f"Vision tower {label!r} is not a ViT: transformers' LLaVA has CLIP and SigLIP towers only.")
    reasons = _unsupported_timm_features(model)
    if reasons:
        raise ValueError(
            f"Vision tower {label!r} has {', '.join(reasons)}: transformers' CLIP/SigLIP towers cannot represent it "
            "(LLaVA drops at most one prefix token), so it cannot be written in transformers' LLaVA format."
        )
    for family in _TOWERS.values():
        if family.matches(model):
            return family
    raise ValueError(
        f"Vision tower {label!r} matches no transformers tower layout (CLIP: class token, pre-norm, patch embedding "
        "without bias; SigLIP: no class token, no pre-norm, patch embedding with bias)."
    )


CLIP = register_tower(
    TowerFamily(
        name="clip",
        hf_model_type="clip_vision_model",
        hf_config_class=CLIPVisionConfig,
        timm_base="vit_base_patch16_clip_224",
        num_prefix_tokens=1,
        layer_norm_eps=1e-5,
        pre_norm=True,
        patch_bias=False,
        rules=(
            KeyRule.rename("cls_token", "embeddings.class_embedding", lead=2),  # (1, 1, D) <-> (D,)
            KeyRule.rename("pos_embed", "embeddings.position_embedding.weight", lead=1),  # (1, 1+N, D) <-> (1+N, D)
            KeyRule.rename("patch_embed.proj.weight", "embeddings.patch_embedding.weight"),
            KeyRule.rename("norm_pre.{p}", "pre_layrnorm.{p}"),
            *_encoder_rules(),
        ),
    )
)

SIGLIP = register_tower(
    TowerFamily(
        name="siglip",
        hf_model_type="siglip_vision_model",
        hf_config_class=SiglipVisionConfig,
        timm_base="vit_base_patch16_siglip_224",
        num_prefix_tokens=0,
        layer_norm_eps=1e-6,
        optional_head=True,
        rules=(
            KeyRule.rename("pos_embed", "embeddings.position_embedding.weight", lead=1),  # (1, N, D) <-> (N, D)
            KeyRule.rename("patch_embed.proj.{p}", "embeddings.patch_embedding.{p}"),
            *_encoder_rules(),
            # attention-pool head: transformers' in_proj (3D rows) is timm's q (D) and kv (2D)
            KeyRule.rename("attn_pool.latent", "head.probe"),
            KeyRule(("attn_pool.q.weight", "attn_pool.kv.weight"), ("head.attention.in_proj_weight",), (1, 2), (3,)),
            KeyRule(("attn_pool.q.bias", "attn_pool.kv.bias"), ("head.attention.in_proj_bias",), (1, 2), (3,)),
            KeyRule.rename("attn_pool.proj.{p}", "head.attention.out_proj.{p}"),
            KeyRule.rename("attn_pool.norm.{p}", "head.layernorm.{p}"),
            KeyRule.rename("attn_pool.mlp.fc1.{p}", "head.mlp.fc1.{p}"),
            KeyRule.rename("attn_pool.mlp.fc2.{p}", "head.mlp.fc2.{p}"),
        ),
    )
)
