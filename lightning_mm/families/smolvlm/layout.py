"""Image splitting of the SmolVLM / Idefics3 family: tiles plus a global view, with row/column marker text.

An image is resized so that its longest edge is ``longest_edge`` (SmolVLM-256M/500M: 2048, short side rounded up to
even), then to whole multiples of ``tile_size`` (512) on both sides, and cut into ``rows x cols`` tiles of
``tile_size`` in row-major order; a global view (the resized image squashed to ``tile_size`` x ``tile_size``) comes
last. An image that ends up no larger than one tile stays a single view. Every resize is PIL's (LANCZOS), on uint8
pixels, as transformers' ``SmolVLMImageProcessorPil`` does.

One ``<image>`` of the prompt becomes, as ``SmolVLMProcessor`` writes it::

    <fake_token_around_image><row_1_col_1><image>*n ... <fake_token_around_image><row_1_col_C><image>*n\\n
    ...
    \\n<fake_token_around_image><global-img><image>*n<fake_token_around_image>

(one view: ``<fake_token_around_image><global-img><image>*n<fake_token_around_image>``), with n = ``image_seq_len``
image tokens per tile. :class:`SmolVLMLayout` answers the image-layout protocol: ``prepare(image)`` and
``prompt_ids(size)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.layout import PreparedImage

__all__ = ["MAX_IMAGE_SIZE", "SmolVLMLayout", "TiledImage", "resized_size", "tile_grid"]

MAX_IMAGE_SIZE = 4096  # transformers' upper bound on the longest edge after the first resize
FAKE_TOKEN = "<fake_token_around_image>"
GLOBAL_TOKEN = "<global-img>"


@dataclass(frozen=True)
class TiledImage(PreparedImage):
    """An image cut into the views the tower reads (a :class:`~lightning_mm.data.layout.PreparedImage` with its grid).

    Attributes:
        tiles: (n_tiles, 3, tile_size, tile_size) uint8: ``rows * cols`` tiles row-major, then the global view (or one
            view when the image was not split).
        size: (height, width) of the original image.
        rows: Tile rows (0 when not split).
        cols: Tile columns (0 when not split).
    """

    rows: int
    cols: int


def _longest_edge_size(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """Longest edge set to ``longest_edge`` (up or down), the other side scaled, truncated and rounded up to even."""
    aspect = width / height
    if width >= height:
        width = longest_edge
        height = int(width / aspect)
        height += height % 2
    else:
        height = longest_edge
        width = int(height * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    # then kept below MAX_IMAGE_SIZE (never reached with longest_edge <= 4096)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width, height = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif height > width and height > MAX_IMAGE_SIZE:
        height, width = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE * aspect)
    return max(height, 1), max(width, 1)


def _tile_multiple_size(height: int, width: int, tile_size: int) -> tuple[int, int]:
    """Both sides rounded up to multiples of ``tile_size``, the short side from the long one's aspect ratio."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile_size) * tile_size
        height = math.ceil(int(width / aspect) / tile_size) * tile_size
    else:
        height = math.ceil(height / tile_size) * tile_size
        width = math.ceil(int(height * aspect) / tile_size) * tile_size
    return height, width


def resized_size(
    height: int, width: int, longest_edge: int | None, tile_size: int, split: bool = True
) -> list[tuple[int, int]]:
    """The sizes an image of ``height`` x ``width`` is resized to, in order (first resize, tile multiples)."""
    sizes = []
    if longest_edge is not None:
        height, width = _longest_edge_size(height, width, longest_edge)
        sizes.append((height, width))
    if split:
        sizes.append(_tile_multiple_size(height, width, tile_size))
    return sizes


def tile_grid(height: int, width: int, longest_edge: int | None, tile_size: int, split: bool = True) -> tuple[int, int]:
    """(rows, cols) of tiles for an image of ``height`` x ``width``; (0, 0) when it stays one view."""
    if not split:
        return 0, 0
    h, w = resized_size(height, width, longest_edge, tile_size, split)[-1]
    if h > tile_size or w > tile_size:
        return h // tile_size, w // tile_size
    return 0, 0


@dataclass
class SmolVLMLayout:
    """Tiles + global view and their prompt ids, as transformers' ``SmolVLMProcessor`` / ``Idefics3Processor``.

    An :class:`~lightning_mm.data.layout.ImageLayout`.

    Args:
        tokenizer: The model's tokenizer, holding ``<image>``, ``<fake_token_around_image>``, ``<global-img>`` and
            ``<row_i_col_j>`` as special tokens.
        image_seq_len: Image tokens per tile (SmolVLM-256M/500M: (512 / 16)^2 / 4^2 = 64).
        tile_size: Side of a tile (the processor's ``max_image_size["longest_edge"]``).
        longest_edge: Longest edge of the first resize (the processor's ``size["longest_edge"]``); None: no resize.
        split: Split into tiles (``do_image_splitting``); off: one view squashed to ``tile_size``.
        resample: PIL resampling filter of every resize (``LANCZOS``: the processor's ``resample=1``).
        image_token: Text of the image token.
    """

    tokenizer: PreTrainedTokenizerBase
    image_seq_len: int = 64
    tile_size: int = 512
    longest_edge: int | None = 2048
    split: bool = True
    resample: Image.Resampling = Image.Resampling.LANCZOS
    image_token: str = "<image>"
    _prompts: dict[tuple[int, int], list[int]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        missing = [t for t in (self.image_token, FAKE_TOKEN, GLOBAL_TOKEN) if t not in self.tokenizer.get_vocab()]
        if missing:
            raise ValueError(
                f"SmolVLM image layout: the tokenizer lacks {missing}; add them (and <row_i_col_j>) as special tokens."
            )

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of tiles of an image of ``size`` = (height, width); (0, 0): one view."""
        return tile_grid(size[0], size[1], self.longest_edge, self.tile_size, self.split)

    def num_tiles(self, size: tuple[int, int]) -> int:
        """Views the tower reads for an image of ``size``: rows * cols + 1 (the global view), or 1."""
        rows, cols = self.grid(size)
        return rows * cols + 1 if rows else 1

    def num_image_tokens(self, size: tuple[int, int]) -> int:
        """Image tokens (feature positions) of an image of ``size``."""
        return self.num_tiles(size) * self.image_seq_len

    def prompt_text(self, size: tuple[int, int]) -> str:
        """The text one ``<image>`` placeholder expands to."""
        rows, cols = self.grid(size)
        run = self.image_token * self.image_seq_len
        global_view = f"{FAKE_TOKEN}{GLOBAL_TOKEN}{run}{FAKE_TOKEN}"
        if not rows:
            return global_view
        lines = [
            "".join(f"{FAKE_TOKEN}<row_{r + 1}_col_{c + 1}>{run}" for c in range(cols)) + "\n" for r in range(rows)
        ]
        return "".join(lines) + "\n" + global_view

    def prompt_ids(self, size: tuple[int, int]) -> list[int]:
        """Token ids replacing one ``<image>``: the image token at each feature position, the rest marker text."""
        key = self.grid(size)
        if key not in self._prompts:
            rows, cols = key
            if rows:
                wanted = {f"<row_{rows}_col_{cols}>"}
                missing = sorted(t for t in wanted if t not in self.tokenizer.get_vocab())
                if missing:
                    raise ValueError(f"SmolVLM image layout: the tokenizer lacks the marker token(s) {missing}.")
            self._prompts[key] = list(self.tokenizer.encode(self.prompt_text(size), add_special_tokens=False))
        return list(self._prompts[key])

    def _resize(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        return image.resize((size[1], size[0]), resample=self.resample)  # PIL takes (width, height)

    def prepare(self, image: Image.Image) -> TiledImage:
        """Resize and cut ``image`` into its views.

        Returns:
            :class:`TiledImage`: tiles (n_tiles, 3, tile_size, tile_size) uint8 and the original (height, width).
        """
        image = image.convert("RGB")
        size = (image.height, image.width)
        t = self.tile_size
        for target in resized_size(*size, self.longest_edge, t, self.split):
            image = self._resize(image, target)
        rows, cols = self.grid(size)
        if rows:
            views = [image.crop((c * t, r * t, (c + 1) * t, (r + 1) * t)) for r in range(rows) for c in range(cols)]
            views.append(self._resize(image, (t, t)))  # the global view
        else:
            views = [image if image.size == (t, t) else self._resize(image, (t, t))]
        tiles = torch.from_numpy(np.stack([np.asarray(v) for v in views])).permute(0, 3, 1, 2)  # (n, 3, t, t)
        return TiledImage(tiles=tiles.contiguous(), size=size, rows=rows, cols=cols)
