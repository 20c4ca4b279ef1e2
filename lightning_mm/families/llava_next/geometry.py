"""Any-resolution tiling (LLaVA-NeXT, LLaVA-OneVision): grid choice, unpadding, token cap, feature assembly.

An image of size (H, W) is read as a *base view* (the whole image resized to the tower's input) plus a grid of tiles
cut from the image resized into the best-fitting resolution of ``grid_pinpoints`` (the one that keeps the most of the
image's pixels and wastes the least, transformers' ``select_best_resolution``). The tower and projector run on every
tile; the tile features are then stitched into one (rows * side, cols * side) feature map, the rows and columns that
only cover the letterbox padding are cut away (unpadding), OneVision shrinks the map bilinearly when it holds more
than ``max_tiles`` tiles' worth of tokens (``anyres_max_9``), and a learned newline embedding closes every row. The
image's tokens are: base view tokens, then the map row by row, each row followed by the newline.

An image given as one tile (OneVision's multi-image mode) is its base view followed by one newline.

Everything here is plain arithmetic on sizes plus one assembly function, so the token count an image gets in the data
(:func:`anyres_token_count`) and the number of features the network writes for it (:func:`assemble_anyres`) come from
the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.image_processing_utils import select_best_resolution

__all__ = [
    "AnyResGeometry",
    "anyres_token_count",
    "assemble_anyres",
    "best_resolution",
    "capped_shape",
    "grid_shape",
    "num_tiles",
    "parse_max_tiles",
    "unpad_bounds",
]


@dataclass(frozen=True)
class AnyResGeometry:
    """The tiling of one model.

    Attributes:
        grid_pinpoints: Resolutions (height, width) in pixels an image may be tiled at; multiples of ``tile_size``.
        tile_size: Side of a tile in pixels (the tower's input size).
        side: Feature tokens per tile side (``tile_size // patch_size``); a tile gives ``side * side`` tokens.
        max_tiles: OneVision's ``anyres_max_N`` cap (N), or None for no cap (LLaVA-NeXT).
    """

    grid_pinpoints: tuple[tuple[int, int], ...]
    tile_size: int
    side: int
    max_tiles: int | None = None

    def __post_init__(self) -> None:
        pins = tuple((int(h), int(w)) for h, w in self.grid_pinpoints)
        object.__setattr__(self, "grid_pinpoints", pins)
        if not pins:
            raise ValueError("grid_pinpoints is empty: give at least one (height, width) resolution.")
        bad = [p for p in pins if p[0] % self.tile_size or p[1] % self.tile_size or min(p) <= 0]
        if bad:
            raise ValueError(f"grid_pinpoints {bad} are not positive multiples of the tile size {self.tile_size}.")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise ValueError(f"max_tiles must be at least 1, got {self.max_tiles}.")


def parse_max_tiles(aspect_ratio: str | None) -> int | None:
    """``anyres_max_9`` -> 9; ``anyres`` or None -> None (no cap).

    Raises:
        ValueError: for any other value, naming it.
    """
    if aspect_ratio in (None, "anyres"):
        return None
    prefix = "anyres_max_"
    if isinstance(aspect_ratio, str) and aspect_ratio.startswith(prefix) and aspect_ratio[len(prefix) :].isdigit():
        return int(aspect_ratio[len(prefix) :])
    raise ValueError(f"vision_aspect_ratio {aspect_ratio!r} is not 'anyres' or 'anyres_max_<N>'.")


def best_resolution(size: tuple[int, int], geometry: AnyResGeometry) -> tuple[int, int]:
    """The pinpoint (height, width) an image of ``size`` (height, width) is tiled at."""
    height, width = select_best_resolution([int(size[0]), int(size[1])], [list(p) for p in geometry.grid_pinpoints])
    return int(height), int(width)


def grid_shape(size: tuple[int, int], geometry: AnyResGeometry) -> tuple[int, int]:
    """(rows, cols) of the tile grid of an image of ``size`` (height, width)."""
    height, width = best_resolution(size, geometry)
    return height // geometry.tile_size, width // geometry.tile_size


def num_tiles(size: tuple[int, int], geometry: AnyResGeometry) -> int:
    """Tiles of an image of ``size``: the grid plus the base view."""
    rows, cols = grid_shape(size, geometry)
    return rows * cols + 1


def unpad_bounds(size: tuple[int, int], map_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the part of a (rows, cols) feature map that covers the image, not the padding.

    The image was resized to fit the grid resolution, keeping its aspect ratio, and centred; the padded border is
    cut symmetrically, rounded as LLaVA-NeXT does.
    """
    orig_h, orig_w = int(size[0]), int(size[1])
    cur_h, cur_w = map_shape
    if orig_w / orig_h > cur_w / cur_h:  # wider than the map: padding above and below
        new_h = int(round(orig_h * (cur_w / orig_w), 7))
        pad = (cur_h - new_h) // 2
        return pad, cur_h - pad, 0, cur_w
    new_w = int(round(orig_w * (cur_h / orig_h), 7))
    pad = (cur_w - new_w) // 2
    return 0, cur_h, pad, cur_w - pad


def capped_shape(shape: tuple[int, int], side: int, max_tiles: int | None) -> tuple[int, int] | None:
    """OneVision's cap: the (height, width) the unpadded map is resized to, or None when it is kept.

    The map is shrunk by ``ratio = sqrt(h * w / (max_tiles * side^2))`` when that exceeds 1.1, to
    ``(int(h // ratio), int(w // ratio))``.
    """
    if max_tiles is None:
        return None
    height, width = shape
    ratio = math.sqrt(height * width / (max_tiles * side**2))
    if ratio <= 1.1:
        return None
    return int(height // ratio), int(width // ratio)


def _map_shape(size: tuple[int, int], geometry: AnyResGeometry) -> tuple[int, int]:
    """(rows, cols) in tokens of the unpadded (and capped) feature map of an image of ``size``."""
    rows, cols = grid_shape(size, geometry)
    top, bottom, left, right = unpad_bounds(size, (rows * geometry.side, cols * geometry.side))
    shape = (bottom - top, right - left)
    return capped_shape(shape, geometry.side, geometry.max_tiles) or shape


def anyres_token_count(size: tuple[int, int], geometry: AnyResGeometry, tiled: bool = True) -> int:
    """Tokens an image of ``size`` (height, width) becomes.

    Args:
        size: Original (height, width) of the image.
        geometry: The model's tiling.
        tiled: False for an image given as its base view only (OneVision's multi-image mode).

    Returns:
        base view (``side^2``) + feature map rows x (cols + 1 newline); untiled: ``side^2 + 1``.
    """
    base = geometry.side**2
    if not tiled:
        return base + 1
    height, width = _map_shape(size, geometry)
    return base + height * (width + 1)


def _assemble_one(
    tiles: torch.Tensor, size: tuple[int, int], geometry: AnyResGeometry, newline: torch.Tensor, index: int
) -> torch.Tensor:
    """Tokens of one image from its tiles' features (n_tiles, side^2, D): (L, D)."""
    side = geometry.side
    base = tiles[0]  # (side^2, D)
    if tiles.shape[0] == 1:  # base view only
        return torch.cat([base, newline[None]], dim=0)  # (side^2 + 1, D)
    rows, cols = grid_shape(size, geometry)
    if tiles.shape[0] != rows * cols + 1:
        raise ValueError(
            f"image {index} of the batch, of size {tuple(size)}, is tiled as {rows} x {cols} + 1 base view, but {tiles.shape[0]} tiles "
            "were given for it."
        )
    dim = tiles.shape[-1]
    grid = tiles[1:].view(rows, cols, side, side, dim)  # (r, c, s, s, D)
    fmap = grid.permute(4, 0, 2, 1, 3).reshape(dim, rows * side, cols * side)  # (D, r*s, c*s)
    top, bottom, left, right = unpad_bounds(size, (rows * side, cols * side))
    fmap = fmap[:, top:bottom, left:right]  # (D, h, w)
    capped = capped_shape(tuple(fmap.shape[1:]), side, geometry.max_tiles)
    if capped is not None:
        fmap = nn.functional.interpolate(fmap[None], list(capped), mode="bilinear")[0]  # (D, h', w')
    height, width = fmap.shape[1:]
    nl = newline.to(fmap.dtype)[:, None, None].expand(dim, height, 1)  # (D, h', 1)
    fmap = torch.cat([fmap, nl], dim=-1)  # (D, h', w' + 1)
    return torch.cat([base, fmap.flatten(1).transpose(0, 1)], dim=0)  # (side^2 + h' * (w' + 1), D)


def assemble_anyres(
    features: torch.Tensor,
    image_sizes: torch.Tensor | Sequence[tuple[int, int]],
    tiles_per_image: torch.Tensor | Sequence[int],
    geometry: AnyResGeometry,
    newline: torch.Tensor,
) -> torch.Tensor:
    """The tokens of every image from the features of all their tiles, concatenated in image order.

    Args:
        features: (N_tiles, side^2, D) projected tile features, each image's tiles in a row (base view first).
        image_sizes: (N_images, 2) original (height, width) of each image.
        tiles_per_image: (N_images,) tiles of each image (1: base view only).
        geometry: The model's tiling.
        newline: (D,) the learned newline embedding.

    Returns:
        (total_image_tokens, D).

    Raises:
        ValueError: when the tiles do not add up, or an image's tile count does not match its size.
    """
    counts = [int(n) for n in (tiles_per_image.tolist() if torch.is_tensor(tiles_per_image) else tiles_per_image)]
    sizes = image_sizes.tolist() if torch.is_tensor(image_sizes) else [list(s) for s in image_sizes]
    if len(sizes) != len(counts):
        raise ValueError(f"{len(sizes)} image sizes for {len(counts)} images (tiles_per_image).")
    if sum(counts) != features.shape[0]:
        raise ValueError(f"tiles_per_image adds up to {sum(counts)} tiles, but {features.shape[0]} were encoded.")
    if features.shape[1] != geometry.side**2:
        raise ValueError(
            f"a tile gives {features.shape[1]} tokens, the tiling expects {geometry.side}^2 = {geometry.side**2}."
        )
    per_image = features.split(counts, dim=0)  # each (n_tiles, side^2, D)
    out = [
        _assemble_one(t, tuple(s), geometry, newline, i) for i, (t, s) in enumerate(zip(per_image, sizes, strict=True))
    ]
    return torch.cat(out, dim=0)  # (total, D)
