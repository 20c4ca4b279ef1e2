"""``AnyResLayout``: the image layout of LLaVA-NeXT / LLaVA-OneVision models (an :class:`ImageLayout`).

``prepare(image)`` cuts an image into its tiles as transformers' ``LlavaNextImageProcessor`` does: the base view (the
whole image resized to the tile size) first, then the grid tiles row by row, cut from the image resized to fit the
best pinpoint resolution (aspect ratio kept, size rounded up) and centred on black. Each tile then goes through the
tower's timm transform (:class:`~lightning_mm.data.images.ImageProcessor`, ``resize`` mode: tiles are already square),
so the tensors are uint8 like every other image of the package (or normalised floats with ``normalize=True``).

``prompt_ids(size)`` is the image-token run one ``<image>`` becomes: its length is
:func:`~lightning_mm.families.llava_next.geometry.anyres_token_count`, the number of features the network writes for the image.

OneVision reads the images of a sample with several images untiled: ``prepare(image, tiled=False)`` gives one tile,
the image padded to a square with the mean colour and resized (``LlavaOnevisionImageProcessor``'s multi-image path),
and ``prompt_ids(size, tiled=False)`` its ``side^2 + 1`` tokens; the collator then writes ``tiles_per_image`` 1. The
data pipeline asks ``for_images(num_images)`` (:func:`~lightning_mm.data.layout.sample_layout`) for each sample's
layout: an untiled view of a OneVision layout for a multi-image sample, the layout itself otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from PIL import Image

from lightning_mm.data.images import ImageProcessor
from lightning_mm.data.layout import PreparedImage
from lightning_mm.families.llava_next.geometry import AnyResGeometry, anyres_token_count, best_resolution

__all__ = ["AnyResLayout", "UntiledLayout", "fit_size"]


def fit_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an image of ``size`` resized to fit inside ``target``, aspect ratio kept, rounded up."""
    height, width = size
    target_h, target_w = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


class AnyResLayout:
    """Tiles and image-token ids of an any-resolution model (an :class:`~lightning_mm.data.layout.ImageLayout`).

    Args:
        geometry: The model's tiling (:attr:`AnyResProjector.geometry
            <lightning_mm.families.llava_next.projector.AnyResProjector.geometry>`).
        data_config: timm data config of the tower (input size, mean, std, interpolation).
        image_token_id: Id of the image token.
        normalize: Return normalised float32 tiles instead of uint8 ones.
    """

    def __init__(
        self,
        geometry: AnyResGeometry,
        data_config: dict[str, Any],
        image_token_id: int,
        normalize: bool = False,
    ) -> None:
        _, height, width = data_config["input_size"]
        if (height, width) != (geometry.tile_size, geometry.tile_size):
            raise ValueError(f"tower input {height}x{width} is not the tile size {geometry.tile_size}.")
        self.geometry = geometry
        self.image_token_id = int(image_token_id)
        self.tile_transform = ImageProcessor(data_config, aspect="resize", normalize=normalize)
        self.resample = Image.Resampling[str(data_config.get("interpolation", "bicubic")).upper()]
        self.background = tuple(int(m * 255) for m in data_config["mean"])  # transformers truncates, as here
        # OneVision (a token cap) reads multi-image samples untiled; LLaVA-NeXT tiles every image
        self.untiled_multi_image = geometry.max_tiles is not None

    def tiles(self, image: Image.Image, tiled: bool = True) -> list[Image.Image]:
        """The base view and the grid tiles (row-major) of ``image``, as PIL images of the tile size.

        With ``tiled=False``: the image padded to a square with the mean colour (centred), resized to the tile.
        """
        image = image if image.mode == "RGB" else image.convert("RGB")
        tile = self.geometry.tile_size
        if not tiled:
            side = max(image.width, image.height)
            square = Image.new("RGB", (side, side), self.background)
            square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
            return [square.resize((tile, tile), self.resample)]
        size = (image.height, image.width)
        target_h, target_w = best_resolution(size, self.geometry)
        new_h, new_w = fit_size(size, (target_h, target_w))
        canvas = Image.new("RGB", (target_w, target_h), (0, 0, 0))
        canvas.paste(image.resize((new_w, new_h), self.resample), ((target_w - new_w) // 2, (target_h - new_h) // 2))
        grid = [
            canvas.crop((left, top, left + tile, top + tile))
            for top in range(0, target_h, tile)
            for left in range(0, target_w, tile)
        ]
        return [image.resize((tile, tile), self.resample), *grid]

    def prepare(self, image: Image.Image, tiled: bool = True) -> PreparedImage:
        """(n_tiles, 3, H, W) tiles of ``image`` (base view first; one tile with ``tiled=False``) and its size."""
        tiles = torch.stack([self.tile_transform(t) for t in self.tiles(image, tiled)])  # (n_tiles, 3, H, W)
        return PreparedImage(tiles=tiles, size=(image.height, image.width))

    def num_tokens(self, size: tuple[int, int], tiled: bool = True) -> int:
        """Image tokens of an image of ``size`` (height, width)."""
        return anyres_token_count(size, self.geometry, tiled)

    def prompt_ids(self, size: tuple[int, int], tiled: bool = True) -> list[int]:
        """The ids that replace one ``<image>``: the image token once per feature the network writes."""
        return [self.image_token_id] * self.num_tokens(size, tiled)

    def for_images(self, num_images: int) -> AnyResLayout | UntiledLayout:
        """The layout of a sample with ``num_images`` images: untiled for OneVision's multi-image samples."""
        return UntiledLayout(self) if self.untiled_multi_image and num_images > 1 else self


class UntiledLayout:
    """The untiled view of an :class:`AnyResLayout`: one padded-square tile per image (OneVision's multi-image path)."""

    def __init__(self, layout: AnyResLayout) -> None:
        self.layout = layout

    def prepare(self, image: Image.Image) -> PreparedImage:
        return self.layout.prepare(image, tiled=False)

    def prompt_ids(self, size: tuple[int, int]) -> list[int]:
        return self.layout.prompt_ids(size, tiled=False)
