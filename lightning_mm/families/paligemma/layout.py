"""One view per image, resized to the tower's input without keeping its aspect ratio: PaliGemma's and Gemma 3's.

transformers' ``SiglipImageProcessor`` (PaliGemma) and ``Gemma3ImageProcessor`` (pan-and-scan off) resize the RGB
image with PIL to the tower's square input (bicubic for PaliGemma, bilinear for Gemma 3; on the uint8 pixels in their
PIL backend), then rescale by 1/255 and normalise with mean = std = 0.5: no padding, no crop. The layout writes the
resized uint8 pixels; :class:`~lightning_mm.models.VisionTower` rescales and normalises them with the tower's mean and
std. One ``<image>`` becomes ``before`` + the image token once per feature + ``after`` (PaliGemma: the image tokens
alone; Gemma 3: ``\\n\\n<start_of_image>`` ... ``<end_of_image>\\n\\n``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from lightning_mm.data.layout import PreparedImage

__all__ = ["ResizedViewLayout", "pil_resample"]


def pil_resample(data_config: dict[str, Any], name: str) -> Image.Resampling:
    """The PIL filter of a timm data config's ``interpolation`` (bicubic when it names none).

    Raises:
        ValueError: naming model ``name`` when PIL has no such filter.
    """
    interpolation = str(data_config.get("interpolation") or "bicubic").upper()
    if interpolation not in Image.Resampling.__members__:
        raise ValueError(f"Model {name!r}: interpolation {interpolation.lower()!r} has no PIL equivalent.")
    return Image.Resampling[interpolation]


class ResizedViewLayout:
    """Each image resized to ``size`` (one view), ``num_image_tokens`` image tokens framed by fixed ids
    (an :class:`~lightning_mm.data.layout.ImageLayout`).

    Args:
        num_image_tokens: Tokens one image becomes after the tower and projector.
        image_token_id: Id of the image token.
        size: (height, width) the tower reads.
        resample: PIL filter of the resize.
        before: Ids written before the image tokens.
        after: Ids written after them.
    """

    def __init__(
        self,
        num_image_tokens: int,
        image_token_id: int,
        size: tuple[int, int],
        resample: Image.Resampling = Image.Resampling.BICUBIC,
        before: Sequence[int] = (),
        after: Sequence[int] = (),
    ) -> None:
        self.num_image_tokens = int(num_image_tokens)
        self.image_token_id = int(image_token_id)
        self.size = (int(size[0]), int(size[1]))
        self.resample = resample
        self.before = tuple(int(i) for i in before)
        self.after = tuple(int(i) for i in after)

    def prompt_ids(self, size: tuple[int, int]) -> list[int]:
        """``before``, the image token once per feature, ``after`` (the same for every image size)."""
        return [*self.before, *[self.image_token_id] * self.num_image_tokens, *self.after]

    def prepare(self, image: Image.Image) -> PreparedImage:
        """(1, 3, H, W) uint8 view of ``image`` and its original (height, width)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        height, width = self.size
        view = image.resize((width, height), resample=self.resample)  # PIL takes (width, height)
        tiles = torch.from_numpy(np.asarray(view).copy()).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        return PreparedImage(tiles=tiles.contiguous(), size=(image.height, image.width))
