"""``AnyResProjector``: a projector that also owns the any-resolution assembly and its learned newline embedding.

It is the wrapped projector's layers under the same names (``projector.0``, ``projector.2`` for ``mlp2x_gelu``) plus
``projector.image_newline`` (D_t,), so state-dict keys of the MLP do not change and placements treat the newline as
part of the projector (LLaVA-NeXT trains it with the projector).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_mm.families.llava_next.geometry import AnyResGeometry, assemble_anyres, num_tiles, parse_max_tiles
from lightning_mm.models.vision import VisionTower

__all__ = ["AnyResProjector", "tiling_geometry", "tiling_projector"]

TILING_KEYS = ("grid_pinpoints", "vision_aspect_ratio")


class AnyResProjector(nn.Sequential):
    """The layers of ``projector`` (run per tile) plus the any-resolution assembly of each image's tiles.

    Args:
        projector: An ``nn.Sequential`` projector mapping (..., D_v) to (..., D_t).
        geometry: The model's tiling (pinpoints, tile size, tokens per tile side, token cap).
        text_dim: D_t, the width of the newline embedding.
    """

    def __init__(self, projector: nn.Module, geometry: AnyResGeometry, text_dim: int) -> None:
        if not isinstance(projector, nn.Sequential):
            raise ValueError(f"AnyResProjector wraps an nn.Sequential projector, got {type(projector).__name__}.")
        super().__init__(*projector)
        self.geometry = geometry
        self.image_newline = nn.Parameter(torch.empty(text_dim))
        nn.init.normal_(self.image_newline, std=1 / math.sqrt(text_dim))  # as LLaVA-NeXT initialises it

    def tiles_per_image(self, image_sizes: torch.Tensor | Sequence[tuple[int, int]]) -> list[int]:
        """Tiles of each image (grid + base view), from its (height, width)."""
        sizes = image_sizes.tolist() if torch.is_tensor(image_sizes) else image_sizes
        return [num_tiles(tuple(s), self.geometry) for s in sizes]

    def assemble(
        self,
        features: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        tiles_per_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens of all images from their tiles' projected features.

        Args:
            features: (N_tiles, side^2, D_t) projected features of all tiles.
            image_sizes: (N_images, 2) original (height, width); None: every tile is an image of one tile.
            tiles_per_image: (N_images,) tiles per image; None: computed from ``image_sizes``.

        Returns:
            (total_image_tokens, D_t).
        """
        n = features.shape[0]
        if image_sizes is None:
            if tiles_per_image is not None and any(int(t) != 1 for t in tiles_per_image):
                raise ValueError("tiles_per_image needs image_sizes for images of several tiles.")
            image_sizes = [(self.geometry.tile_size, self.geometry.tile_size)] * n
            tiles_per_image = [1] * n
        elif tiles_per_image is None:
            tiles_per_image = self.tiles_per_image(image_sizes)
        return assemble_anyres(features, image_sizes, tiles_per_image, self.geometry, self.image_newline)

    def extra_repr(self) -> str:
        g = self.geometry
        cap = f", max_tiles={g.max_tiles}" if g.max_tiles is not None else ""
        return f"tile_size={g.tile_size}, side={g.side}, {len(g.grid_pinpoints)} pinpoints{cap}"


def tiling_geometry(tower: VisionTower, tiling: Mapping[str, Any]) -> AnyResGeometry:
    """The tiling of a model with tower ``tower`` and settings ``tiling``.

    Args:
        tower: The vision tower; its input size is the tile size, its patch grid the tokens per tile side.
        tiling: ``grid_pinpoints`` ([[height, width], ...] in pixels) and optionally ``vision_aspect_ratio``
            (``anyres``, the default, or OneVision's ``anyres_max_<N>``).

    Raises:
        ValueError: for unknown keys, a non-square tower, or a tower that keeps prefix tokens.
    """
    unknown = sorted(set(tiling) - set(TILING_KEYS))
    if unknown:
        raise ValueError(f"image_tiling: unknown key(s) {unknown}; known: {', '.join(TILING_KEYS)}.")
    if "grid_pinpoints" not in tiling:
        raise ValueError("image_tiling needs grid_pinpoints ([[height, width], ...] in pixels).")
    _, height, width = tower.data_config()["input_size"]
    grid = tuple(getattr(getattr(tower.model, "patch_embed", None), "grid_size", ()) or ())
    if height != width or len(grid) != 2 or grid[0] != grid[1]:
        raise ValueError(f"any-resolution tiling needs a square tower input and patch grid, got {height}x{width}.")
    if tower.num_prefix_tokens and not tower.drop_prefix_tokens:
        raise ValueError("any-resolution tiling needs patch tokens only: set drop_prefix_tokens for this tower.")
    return AnyResGeometry(
        grid_pinpoints=tuple(tuple(p) for p in tiling["grid_pinpoints"]),
        tile_size=int(height),
        side=int(grid[0]),
        max_tiles=parse_max_tiles(tiling.get("vision_aspect_ratio")),
    )


def tiling_projector(
    projector: nn.Module, tower: VisionTower, tiling: Mapping[str, Any], text_dim: int
) -> AnyResProjector:
    """``projector`` wrapped into an :class:`AnyResProjector` with the tiling of ``tower`` and ``tiling``."""
    return AnyResProjector(projector, tiling_geometry(tower, tiling), text_dim)
