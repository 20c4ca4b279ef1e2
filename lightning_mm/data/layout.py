"""How an image becomes tiles for the vision tower and token ids in the prompt: the :class:`ImageLayout` protocol.

The number of tokens an image takes in the prompt may depend on its size (any-resolution tiling, image splitting):
a layout prepares the tiles of one image (:meth:`ImageLayout.prepare`) and gives the ids that replace its ``<image>``
placeholder (:meth:`ImageLayout.prompt_ids`), from the image's original size only. :class:`FixedLayout` is the
LLaVA-1.5 layout: one tile, ``num_image_tokens`` image tokens for every image.

Batch keys written by the collator for the network: ``pixel_values`` (N_tiles, 3, H, W), the tiles of all images of
the batch in sample, image and tile order; ``image_sizes`` (N_images, 2) long, each image's original (height, width);
``tiles_per_image`` (N_images,) long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from lightning_mm.data.images import ImageProcessor

__all__ = [
    "FixedLayout",
    "ImageLayout",
    "PreparedImage",
    "image_token_counts",
    "resolve_layout",
    "sample_layout",
]


@dataclass(frozen=True)
class PreparedImage:
    """One image ready for the vision tower.

    Attributes:
        tiles: (n_tiles, 3, H, W) uint8 (or normalised float) tensor, as :class:`~lightning_mm.data.ImageProcessor`
            writes one image.
        size: (height, width) of the original image.
    """

    tiles: torch.Tensor
    size: tuple[int, int]


@runtime_checkable
class ImageLayout(Protocol):
    """Tiles and prompt ids of an image."""

    def prepare(self, image: Image.Image) -> PreparedImage:
        """The tiles of one RGB image and its original size."""
        ...

    def prompt_ids(self, size: tuple[int, int]) -> list[int]:
        """The token ids that replace ONE ``<image>`` placeholder for an image of ``size`` (height, width).

        The image-token id stands at each feature position (in the order the network writes the features); any other
        id is marker text (e.g. a row/column marker or a global-view marker). Every one of them is labelled -100.
        """
        ...


class FixedLayout:
    """One tile per image, resized to the tower's input, and ``num_image_tokens`` image tokens (LLaVA-1.5).

    Args:
        num_image_tokens: Tokens one image becomes after the vision tower and projector.
        image_token_id: Id of the image token.
        processor: Resizes images to the tower's input (None: this layout gives prompt ids only).
    """

    def __init__(self, num_image_tokens: int, image_token_id: int, processor: ImageProcessor | None = None) -> None:
        self.num_image_tokens = int(num_image_tokens)
        self.image_token_id = int(image_token_id)
        self.processor = processor

    def prepare(self, image: Image.Image) -> PreparedImage:
        if self.processor is None:
            raise ValueError("FixedLayout without an ImageProcessor cannot prepare images: pass image_data_config.")
        return PreparedImage(self.processor(image).unsqueeze(0), (image.height, image.width))  # (1, 3, H, W)

    def prompt_ids(self, size: tuple[int, int]) -> list[int]:
        return [self.image_token_id] * self.num_image_tokens


def resolve_layout(
    layout: ImageLayout | None,
    num_image_tokens: int | None,
    image_token_id: int | None,
    processor: ImageProcessor | None = None,
) -> ImageLayout | None:
    """``layout``; when None, the :class:`FixedLayout` of ``num_image_tokens`` (None when that is not given either).

    The one place where "no layout" means one fixed-size view per image: a model's
    :class:`~lightning_mm.data.DataContract` always names its layout; this serves datasets and collators built by hand.
    """
    if layout is not None:
        return layout
    if num_image_tokens is None or image_token_id is None:
        return None
    return FixedLayout(num_image_tokens, image_token_id, processor)


def sample_layout(layout: ImageLayout, num_images: int) -> ImageLayout:
    """The layout of a sample with ``num_images`` images.

    A layout that reads the images of multi-image samples differently (e.g. untiled) defines
    ``for_images(num_images) -> ImageLayout``; every other layout is the same for every sample.
    """
    for_images = getattr(layout, "for_images", None)
    return layout if for_images is None else for_images(num_images)


def image_token_counts(layout: ImageLayout, sizes: Sequence[tuple[int, int]], image_token_id: int) -> list[int]:
    """Image tokens (features) of each image of ``sizes`` (the images of one sample) under ``layout``: its prompt ids
    less the markers."""
    layout = sample_layout(layout, len(sizes))
    return [layout.prompt_ids(tuple(size)).count(image_token_id) for size in sizes]
