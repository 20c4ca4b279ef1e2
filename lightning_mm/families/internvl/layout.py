"""Dynamic tiling of InternVL 2.5 / 3: an image becomes up to ``max_tiles`` square tiles plus a thumbnail.

The tile grid (``cols`` x ``rows``, ``min_tiles <= cols * rows <= max_tiles``) is the one whose aspect ratio is closest
to the image's (width / height); among grids equally close, a later one in the order (fewer tiles first, then fewer
columns) replaces the earlier only while the image covers more than half of its area. This is the choice of
transformers' ``GotOcr2ImageProcessor`` (``crop_to_patches``), which ``InternVLProcessor`` turns on. The image is
resized (PIL, bicubic by default, on uint8 pixels) to ``cols * tile`` x ``rows * tile`` and cut row-major; with more
than one tile, the whole image resized to one tile (the thumbnail) comes last.

One ``<image>`` of the prompt becomes ``<img>`` + ``<IMG_CONTEXT>`` x (tiles * tokens per tile) + ``</img>``, as
``InternVLProcessor`` writes it (256 tokens a 448 px tile for the released models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.layout import PreparedImage

__all__ = ["InternVLLayout", "TilingSettings", "tile_grid"]

START_TOKEN, END_TOKEN = "<img>", "</img>"


@dataclass(frozen=True)
class TilingSettings:
    """InternVL's tiling, read from ``ModelSpec.image_tiling`` (every key optional).

    Attributes:
        min_tiles: Fewest grid tiles (the processor's ``min_patches``).
        max_tiles: Most grid tiles (``max_patches``); 1 reads every image as one resized tile.
        use_thumbnail: Append the whole image as one more tile when the grid has several.
        start_token: Text of the token before an image's tokens.
        end_token: Text of the token after them.
    """

    min_tiles: int = 1
    max_tiles: int = 12
    use_thumbnail: bool = True
    start_token: str = START_TOKEN
    end_token: str = END_TOKEN

    def __post_init__(self) -> None:
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise ValueError(
                f"image_tiling: need 1 <= min_tiles <= max_tiles, got min_tiles={self.min_tiles}, "
                f"max_tiles={self.max_tiles}."
            )

    @classmethod
    def from_spec(cls, tiling: Mapping[str, Any] | None) -> TilingSettings:
        """The settings of a spec's ``image_tiling`` (None: the released models' defaults).

        Raises:
            ValueError: for a key InternVL's tiling does not have, naming it.
        """
        tiling = dict(tiling or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(tiling) - known)
        if unknown:
            raise ValueError(f"image_tiling: unknown key(s) {unknown} for InternVL tiling; known: {sorted(known)}.")
        return cls(**tiling)


def _grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """(cols, rows) grids with min_tiles <= cols * rows <= max_tiles: fewer tiles first, then fewer columns."""
    grids = [
        (cols, rows)
        for cols in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= cols * rows <= max_tiles
    ]
    return sorted(grids, key=lambda g: g[0] * g[1])  # stable: columns, then rows, within a tile count


def tile_grid(size: tuple[int, int], tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """(cols, rows) of the tile grid of an image of ``size`` = (height, width)."""
    height, width = size
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in _grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)  # as close: more tiles while the image fills over half of them
    return best


@dataclass
class InternVLLayout:
    """Tiles and prompt ids of InternVL's dynamic tiling (an :class:`~lightning_mm.data.layout.ImageLayout`).

    Args:
        tokenizer: The model's tokenizer, holding the start and end tokens.
        image_token_id: Id of the image (context) token.
        tokens_per_tile: Image tokens one tile becomes (released models: (448 / 14)^2 / 2^2 = 256).
        tile_size: Side of a tile in pixels (the tower's input).
        settings: Grid bounds, thumbnail and the start / end tokens.
        resample: PIL filter of every resize (the processor's ``resample``; bicubic).
    """

    tokenizer: PreTrainedTokenizerBase
    image_token_id: int
    tokens_per_tile: int
    tile_size: int = 448
    settings: TilingSettings = field(default_factory=TilingSettings)
    resample: Image.Resampling = Image.Resampling.BICUBIC
    _frame: tuple[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        vocab = self.tokenizer.get_vocab()
        wanted = (self.settings.start_token, self.settings.end_token)
        missing = [t for t in wanted if t not in vocab]
        if missing:
            raise ValueError(f"InternVL image layout: the tokenizer lacks {missing}; add them as special tokens.")
        self._frame = (vocab[wanted[0]], vocab[wanted[1]])

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """(cols, rows) of the tile grid of an image of ``size`` = (height, width); (1, 1) when not tiled."""
        if self.settings.max_tiles <= 1:
            return 1, 1
        return tile_grid(size, self.tile_size, self.settings.min_tiles, self.settings.max_tiles)

    def num_tiles(self, size: tuple[int, int]) -> int:
        """Tiles the tower reads for an image of ``size``: the grid, plus the thumbnail when the grid has several."""
        cols, rows = self.grid(size)
        n = cols * rows
        return n + 1 if n > 1 and self.settings.use_thumbnail else n

    def num_image_tokens(self, size: tuple[int, int]) -> int:
        """Image tokens of an image of ``size``."""
        return self.num_tiles(size) * self.tokens_per_tile

    def prompt_ids(self, size: tuple[int, int]) -> list[int]:
        """``<img>``, the image token once per feature, ``</img>``."""
        start, end = self._frame
        return [start, *[self.image_token_id] * self.num_image_tokens(size), end]

    def _resize(self, image: Image.Image, height: int, width: int) -> Image.Image:
        return image.resize((width, height), resample=self.resample)  # PIL takes (width, height)

    def prepare(self, image: Image.Image) -> PreparedImage:
        """(n_tiles, 3, tile, tile) uint8 tiles of ``image`` (grid row-major, then the thumbnail) and its size."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        size, t = (image.height, image.width), self.tile_size
        cols, rows = self.grid(size)
        canvas = self._resize(image, rows * t, cols * t)
        views = [canvas.crop((c * t, r * t, (c + 1) * t, (r + 1) * t)) for r in range(rows) for c in range(cols)]
        if len(views) > 1 and self.settings.use_thumbnail:
            views.append(self._resize(image, t, t))
        tiles = torch.from_numpy(np.stack([np.asarray(v) for v in views])).permute(0, 3, 1, 2)  # (n, 3, t, t)
        return PreparedImage(tiles=tiles.contiguous(), size=size)
