"""InternVL's projector: pixel shuffle, then LayerNorm -> Linear -> GELU -> Linear (transformers'
``InternVLMultiModalProjector`` after ``InternVLModel.pixel_shuffle``).

Each s x s block of a tile's patch tokens becomes one token of width s^2 * D_v (``downsample_ratio`` = 1 / s; the
released models: 0.5, 1024 patches -> 256 tokens), in transformers' channel order (row offset, column offset,
feature: :func:`~lightning_mm.models.token_reduction.pixel_shuffle`), then the normed MLP maps it to the LM width.
The module names (``layer_norm``, ``linear_1``, ``linear_2``) are transformers'.

Registered on import as ``pixel_shuffle2_norm_mlp2x_gelu`` with
:func:`~lightning_mm.models.projector.register_projector`.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_mm.models.projector import register_projector
from lightning_mm.models.token_reduction import pixel_shuffle

__all__ = ["SCALE_FACTORS", "PixelShuffleNormMLP", "projector_name", "scale_of_ratio"]

SCALE_FACTORS = (2,)  # downsample_ratio 0.5, the released models' (other ratios: add the factor here)


def projector_name(scale_factor: int) -> str:
    """The registered name of the projector with pixel-shuffle factor ``scale_factor``."""
    return f"pixel_shuffle{scale_factor}_norm_mlp2x_gelu"


def scale_of_ratio(downsample_ratio: float) -> int | None:
    """s with 1 / s == ``downsample_ratio`` for a supported s, else None."""
    for s in SCALE_FACTORS:
        if abs(float(downsample_ratio) - 1.0 / s) < 1e-12:
            return s
    return None


class PixelShuffleNormMLP(nn.Module):
    """Pixel shuffle by ``scale_factor``, then LayerNorm(s^2 D_v) -> Linear -> GELU -> Linear.

    Args:
        vision_dim: D_v, the width of the tower's features.
        text_dim: D_t, the LM's embedding width.
        scale_factor: s: s * s neighbouring patches become one token.
        layer_norm_eps: Epsilon of the LayerNorm (transformers' projector: torch's default, 1e-5).
    """

    def __init__(self, vision_dim: int, text_dim: int, scale_factor: int = 2, layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        if scale_factor not in SCALE_FACTORS:
            raise ValueError(f"pixel-shuffle factor {scale_factor} is not one of {SCALE_FACTORS}.")
        self.scale_factor = scale_factor
        in_dim = vision_dim * scale_factor**2
        self.layer_norm = nn.LayerNorm(in_dim, eps=layer_norm_eps)
        self.linear_1 = nn.Linear(in_dim, text_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(text_dim, text_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D_v) tile tokens -> (N, L / s^2, D_t)."""
        x = pixel_shuffle(x, self.scale_factor)  # (N, L / s^2, s^2 D_v)
        return self.linear_2(self.act(self.linear_1(self.layer_norm(x))))  # (N, L / s^2, D_t)


def _register() -> None:
    for s in SCALE_FACTORS:
        register_projector(projector_name(s))(lambda v, t, s=s: PixelShuffleNormMLP(v, t, scale_factor=s))


_register()
