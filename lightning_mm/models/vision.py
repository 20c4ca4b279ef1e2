"""Vision tower: a timm image model that returns the patch features of one chosen block."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from lightning_mm.models.component import TimmTowerComponent

__all__ = ["VisionTower", "check_timm_model_name"]


def check_timm_model_name(model_name: str) -> None:
    """Raise a clear ``ValueError`` when timm does not know ``model_name``.

    Args:
        model_name: timm architecture name, optionally with a pretrained tag (``arch.tag``).
    """
    if timm.is_model(model_name):
        return
    arch = model_name.split(".", 1)[0]
    stem = arch.split("_")[0]
    close = timm.list_models(f"{stem}*")[:8]
    hint = f" Similar names: {', '.join(close)}." if close else ""
    raise ValueError(f"Unknown timm vision model {model_name!r}.{hint} See `timm.list_models()` for all names.")


class VisionTower(nn.Module):
    """A timm backbone returning the tokens of one block, LLaVA style.

    LLaVA reads the output of the second-to-last transformer block (``feature_layer=-2``), before the final norm, and
    drops the prefix tokens (CLS and register tokens, timm's ``num_prefix_tokens``), keeping only patch tokens.

    Images may come as ``uint8`` (0..255, what :class:`~lightning_mm.data.ImageProcessor` yields by default): they are
    normalised here, on their device, with the mean and std of the tower's timm data config. Floating-point images are
    taken as already normalised.

    Args:
        model_name: timm architecture name, optionally with a pretrained tag (``vit_large_patch14_clip_336.openai``).
        pretrained: Load timm's pretrained weights (from the hub, or from ``pretrained_cfg_overlay=dict(file=...)``).
        feature_layer: Index of the block whose output is used (negative counts from the end).
        drop_prefix_tokens: Drop CLS/register tokens and keep patch tokens only.
        model_kwargs: Extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``, ``depth``).
        feature_norm: Apply the tower's final norm to the features read (image-splitting models read the last block
            through ``post_layernorm``); the norm then counts as a used parameter.

    Its blocks, unused parameters, sharding and checkpointing units are those of a
    :class:`~lightning_mm.models.component.TimmTowerComponent` (:meth:`component_interface`): timm's ``blocks``, or
    its ``stages`` for a model built from stages (``feature_layer`` then counts stages, as in timm's
    ``forward_intermediates``).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        feature_layer: int = -2,
        drop_prefix_tokens: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        feature_norm: bool = False,
    ) -> None:
        super().__init__()
        check_timm_model_name(model_name)
        kwargs = dict(model_kwargs or {})
        self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kwargs)
        if not hasattr(self.model, "forward_intermediates"):
            raise ValueError(f"timm model {model_name!r} has no `forward_intermediates`; it cannot be a vision tower.")
        depth = len(TimmTowerComponent(self).blocks())
        if depth and not -depth <= feature_layer < depth:
            raise ValueError(f"feature_layer={feature_layer} is out of range for {model_name!r} with {depth} blocks.")
        self.model_name = model_name
        self.feature_layer = feature_layer
        self.drop_prefix_tokens = drop_prefix_tokens
        self.feature_norm = feature_norm
        self.depth = depth
        # absolute index of the block that is read: the blocks after it and the final norm never run
        self.block_index = feature_layer % depth if depth else feature_layer
        cfg = self.data_config()
        # python floats, not buffers: the state dict keeps its keys, and meta-device init has nothing to fill in
        self.pixel_mean: tuple[float, ...] = tuple(float(m) for m in cfg["mean"])
        self.pixel_std: tuple[float, ...] = tuple(float(s) for s in cfg["std"])
        self._affine: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (scale, shift)

    def component_interface(self) -> TimmTowerComponent:
        """This tower's answers as a component: blocks, unused parameters, LoRA targets, sharding units."""
        return TimmTowerComponent(self, "vision")

    def unused_parameter_names(self) -> list[str]:
        """Names (relative to this module) of parameters that never take part in ``forward``.

        The blocks after ``feature_layer`` and the final norm are kept so that released checkpoints load unchanged and
        parameter counts match them, but they receive no gradient: placements never make them trainable.
        """
        return self.component_interface().unused_parameter_names()

    @property
    def hidden_size(self) -> int:
        """Width of the features this tower emits."""
        return int(self.model.num_features)

    @property
    def num_prefix_tokens(self) -> int:
        """Number of CLS/register tokens the backbone prepends (0 for SigLIP)."""
        return int(getattr(self.model, "num_prefix_tokens", 0))

    def data_config(self) -> dict[str, Any]:
        """timm's data config for this tower (input size, mean, std, interpolation, crop)."""
        cfg = timm.data.resolve_model_data_config(self.model)
        img_size = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
        if img_size is not None:  # the pretrained cfg does not follow an `img_size` override
            cfg["input_size"] = (3, *tuple(img_size))
        return cfg

    def normalize(self, pixel_values: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Scale uint8 images to [0, 1] and normalise them with the tower's mean and std, on their device.

        Computed in float32 as one fused multiply-add, ``x * (1 / (255 * std)) - mean / std``, and cast once to
        ``dtype``, as the float path casts the images normalised on the CPU.

        Args:
            pixel_values: (N_img, C, H, W) uint8 images.
            dtype: Output dtype (None: the tower's parameter dtype).

        Returns:
            (N_img, C, H, W) normalised images.
        """
        if dtype is None:
            dtype = next(self.parameters()).dtype
        device = pixel_values.device
        if device not in self._affine:  # built once per device: no host-to-device copy per step
            mean = torch.tensor(self.pixel_mean, dtype=torch.float64, device="cpu")  # (C,)
            std = torch.tensor(self.pixel_std, dtype=torch.float64, device="cpu")  # (C,)
            scale = (1.0 / (255.0 * std)).float().view(1, -1, 1, 1).to(device)  # (1, C, 1, 1)
            shift = (-mean / std).float().view(1, -1, 1, 1).to(device)  # (1, C, 1, 1)
            self._affine[device] = (scale, shift)
        scale, shift = self._affine[device]
        return torch.addcmul(shift, pixel_values, scale).to(dtype)  # (N_img, C, H, W), uint8 promoted to float32

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            pixel_values: (N_img, 3, H, W) uint8 images (normalised here), or normalised floating-point images.

        Returns:
            (N_img, L, D) tokens of the chosen block: L patch tokens, plus the prefix tokens first if kept.
        """
        if not pixel_values.is_floating_point():
            pixel_values = self.normalize(pixel_values)  # (N_img, 3, H, W)
        # a tower without prefix tokens (SigLIP) has none to return: timm then gives the bare tensor, not a pair
        with_prefix = not self.drop_prefix_tokens and self.num_prefix_tokens > 0
        out = self.model.forward_intermediates(
            pixel_values,
            indices=[self.block_index],
            output_fmt="NLC",
            stop_early=True,
            intermediates_only=True,
            norm=self.feature_norm,
            return_prefix_tokens=with_prefix,
        )[0]
        if not with_prefix:
            return out  # (N_img, L, D): patch tokens only (prefix removed by timm, or none to begin with)
        patches, prefix = out
        return torch.cat([prefix, patches], dim=1)  # (N_img, P + L, D)
