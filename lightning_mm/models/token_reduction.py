"""Token-reducing projectors: fewer image tokens per tile, then a projection into the LM's embedding space.

Each projector takes the patch tokens of a square grid, (N_img, L, D_v) with L = side * side, reduces the grid and
maps the result to (N_img, L', D_t):

* ``pixel_shuffle{s}_linear`` / ``pixel_shuffle{s}_mlp2x_gelu`` (s = 2, 3, 4): space-to-depth, as image-splitting VLMs'
  connector does. Each s x s block of neighbouring patches becomes one token of width s * s * D_v (L' = L / s^2), in
  the channel order of transformers' pixel-shuffle connectors: row offset, then column offset, then
  feature. The ``linear`` head is one Linear without bias.
* ``avgpool2x2_linear`` / ``avgpool2x2_mlp2x_gelu``: 2 x 2 average pooling of the grid (L' = L / 4).
* ``bilinear{n}_linear`` / ``bilinear{n}_mlp2x_gelu`` (n = 64, 144, 256, 576): the grid resized bilinearly to a token
  budget of n = k * k tokens (``align_corners=False``, as tiling VLMs downsample capped features).

All are registered with :func:`~lightning_mm.models.projector.register_projector` when this module is imported.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_mm.models.projector import register_projector

__all__ = [
    "BILINEAR_BUDGETS",
    "PIXEL_SHUFFLE_FACTORS",
    "AvgPoolProjector",
    "BilinearProjector",
    "PixelShuffleProjector",
    "grid_side",
    "pixel_shuffle",
]

PIXEL_SHUFFLE_FACTORS = (2, 3, 4)
BILINEAR_BUDGETS = (64, 144, 256, 576)
HEADS = ("linear", "mlp2x_gelu")


def grid_side(num_tokens: int, what: str = "projector") -> int:
    """Side of the square token grid of ``num_tokens`` tokens.

    Raises:
        ValueError: when ``num_tokens`` is not a perfect square (the tower kept a prefix token, or its input is not
            square).
    """
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"{what}: {num_tokens} tokens do not form a square grid; token-reducing projectors need the patch tokens "
            "of a square input only (drop CLS/register tokens with drop_prefix_tokens)."
        )
    return side


def pixel_shuffle(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Space-to-depth of a square token grid, with transformers' pixel-shuffle channel order.

    Token (i, j) of the output holds input tokens (i*s + a, j*s + b) for a, b in 0..s-1, at channels
    ``a * s * D + b * D + d``.

    Args:
        x: (N, L, D) tokens of a side x side grid, row-major (L = side * side).
        scale_factor: s; side must be a multiple of it.

    Returns:
        (N, L / s^2, s^2 * D).
    """
    n, length, dim = x.shape
    side = grid_side(length, f"pixel_shuffle{scale_factor}")
    s = scale_factor
    if side % s:
        raise ValueError(f"pixel_shuffle{s}: the {side}x{side} token grid is not divisible by {s}.")
    x = x.reshape(n, side // s, s, side // s, s, dim)  # (N, i, a, j, b, D)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (N, i, j, a, b, D)
    return x.reshape(n, (side // s) ** 2, s * s * dim)  # (N, L / s^2, s^2 * D)


def _head(kind: str, in_dim: int, out_dim: int, bias: bool = True) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=bias)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ValueError(f"Unknown projector head {kind!r}; one of {', '.join(HEADS)}.")


class PixelShuffleProjector(nn.Module):
    """Pixel shuffle (space-to-depth) by ``scale_factor``, then ``proj``.

    Args:
        vision_dim: D_v.
        text_dim: D_t.
        scale_factor: s (2, 3, 4): s * s neighbouring patches become one token.
        head: ``linear`` (one bias-free Linear) or ``mlp2x_gelu`` (Linear, GELU, Linear).
    """

    def __init__(self, vision_dim: int, text_dim: int, scale_factor: int = 2, head: str = "linear") -> None:
        super().__init__()
        self.scale_factor = scale_factor
        in_dim = vision_dim * scale_factor**2
        self.proj = _head(head, in_dim, text_dim, bias=head != "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D_v) -> (N, L / s^2, D_t)."""
        return self.proj(pixel_shuffle(x, self.scale_factor))  # (N, L / s^2, D_t)


class AvgPoolProjector(nn.Module):
    """2 x 2 average pooling of the token grid, then ``proj``.

    Args:
        vision_dim: D_v.
        text_dim: D_t.
        head: ``linear`` or ``mlp2x_gelu``.
    """

    def __init__(self, vision_dim: int, text_dim: int, head: str = "mlp2x_gelu") -> None:
        super().__init__()
        self.proj = _head(head, vision_dim, text_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D_v) -> (N, L / 4, D_t); the grid side must be even."""
        n, length, dim = x.shape
        side = grid_side(length, "avgpool2x2")
        if side % 2:
            raise ValueError(f"avgpool2x2: the {side}x{side} token grid has an odd side.")
        grid = x.transpose(1, 2).reshape(n, dim, side, side)  # (N, D, side, side)
        pooled = F.avg_pool2d(grid, kernel_size=2, stride=2)  # (N, D, side/2, side/2)
        return self.proj(pooled.flatten(2).transpose(1, 2))  # (N, L / 4, D_t)


class BilinearProjector(nn.Module):
    """Bilinear resize of the token grid to ``num_tokens`` (a square number), then ``proj``.

    Args:
        vision_dim: D_v.
        text_dim: D_t.
        num_tokens: Token budget per image, k * k.
        head: ``linear`` or ``mlp2x_gelu``.
    """

    def __init__(self, vision_dim: int, text_dim: int, num_tokens: int = 144, head: str = "mlp2x_gelu") -> None:
        super().__init__()
        self.side = grid_side(num_tokens, f"bilinear{num_tokens}")
        self.num_tokens = num_tokens
        self.proj = _head(head, vision_dim, text_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D_v) -> (N, num_tokens, D_t)."""
        n, length, dim = x.shape
        side = grid_side(length, f"bilinear{self.num_tokens}")
        grid = x.transpose(1, 2).reshape(n, dim, side, side)  # (N, D, side, side)
        resized = F.interpolate(grid, size=(self.side, self.side), mode="bilinear", align_corners=False)  # (N, D, k, k)
        return self.proj(resized.flatten(2).transpose(1, 2))  # (N, k * k, D_t)


def _register() -> None:
    for head in HEADS:
        for s in PIXEL_SHUFFLE_FACTORS:
            register_projector(f"pixel_shuffle{s}_{head}")(
                lambda v, t, s=s, head=head: PixelShuffleProjector(v, t, scale_factor=s, head=head)
            )
        register_projector(f"avgpool2x2_{head}")(lambda v, t, head=head: AvgPoolProjector(v, t, head=head))
        for budget in BILINEAR_BUDGETS:
            register_projector(f"bilinear{budget}_{head}")(
                lambda v, t, budget=budget, head=head: BilinearProjector(v, t, num_tokens=budget, head=head)
            )


_register()
