"""Images fitted to the vision tower's input from its timm data config, with LLaVA's aspect modes.

The pixels are those of transformers' image processors (PIL backend) with the same settings, so that an exported
processor reads images as training did (see ``lightning_mm.families.llava.processor``): PIL resampling, centre-crop
offsets rounded down, LLaVA's pad-to-square colour ``int(255 * mean)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from lightning_mm.data.image_decode import ImageLoadError, decode_image, to_rgb

__all__ = ["ASPECT_MODES", "ImageLoadError", "ImageProcessor", "crop_resize_size", "resample_filter"]

#: How an image whose aspect ratio differs from the tower's input is fitted:
#: ``pad``: pad to the input's aspect ratio with the mean colour, then resize (LLaVA-1.5 finetune, "expand to square",
#: as transformers' ``LlavaImageProcessor(do_pad=True)``);
#: ``resize``: resize to the input size, distorting the aspect ratio;
#: ``crop``: timm's evaluation transform of the tower as configured (resize the short side to
#: ``floor(size / crop_pct)``, centre crop).
ASPECT_MODES = ("pad", "resize", "crop")

#: timm's ``crop_pct`` when a data config has none.
DEFAULT_CROP_PCT = 0.875


def resample_filter(interpolation: str) -> Image.Resampling:
    """PIL's filter of a timm interpolation name (``bicubic``, ``bilinear``, ``nearest``, ``lanczos``, ...)."""
    name = str(interpolation).upper()
    if name not in Image.Resampling.__members__:
        raise ValueError(
            f"interpolation {interpolation!r} has no PIL filter; one of {sorted(Image.Resampling.__members__)}"
        )
    return Image.Resampling[name]


def crop_resize_size(data_config: dict[str, Any]) -> tuple[int, int]:
    """(height, width) that ``crop`` scales to before its centre crop: ``floor(input / crop_pct)`` per side (timm's
    eval transform; for ``crop_mode="center"`` the short side of the image goes to the height).

    Raises:
        ValueError: for timm's ``crop_mode="border"`` (padding inside ``crop``: use ``image_aspect="pad"``).
    """
    mode = data_config.get("crop_mode") or "center"
    if mode not in ("center", "squash"):
        raise ValueError(f"image data config crop_mode {mode!r} is not supported by aspect 'crop' (center, squash)")
    crop_pct = float(data_config.get("crop_pct") or DEFAULT_CROP_PCT)
    _, height, width = data_config["input_size"]
    return math.floor(height / crop_pct), math.floor(width / crop_pct)


def _centre_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """The centre ``height`` x ``width`` of ``image``, offsets rounded down (transformers' ``center_crop``)."""
    top, left = (image.height - height) // 2, (image.width - width) // 2
    if (top, left) == (0, 0) and image.size == (width, height):
        return image
    return image.crop((left, top, left + width, top + height))


class ImageProcessor:
    """Loads images and resizes them to the vision tower's input, as uint8 (or normalised float) tensors.

    By default the output is the resized image as (3, H, W) ``uint8``: a quarter of the bytes of float32 to pass from
    DataLoader workers and to copy to the accelerator, and no per-pixel float work on the CPU.
    :class:`~lightning_mm.models.VisionTower` normalises uint8 input on the device with the same mean and std (the
    tower's timm data config). With ``normalize=True`` the output is (3, H, W) ``float32``, scaled to [0, 1] and
    normalised with ``mean``/``std`` here (timm's evaluation transform), e.g. for a model that expects normalised
    input; the tower uses float input as is.

    Args:
        data_config: timm data config of the tower (``timm.data.resolve_model_data_config``): ``input_size``,
            ``mean``, ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``.
        aspect: One of :data:`ASPECT_MODES`.
        normalize: Return normalised float32 tensors instead of uint8 ones.
    """

    def __init__(self, data_config: dict[str, Any], aspect: str = "pad", normalize: bool = False) -> None:
        if aspect not in ASPECT_MODES:
            raise ValueError(f"aspect must be one of {ASPECT_MODES}, got {aspect!r}")
        missing = {"input_size", "mean", "std"} - set(data_config)
        if missing:
            raise ValueError(f"image data config lacks {sorted(missing)}; got keys {sorted(data_config)}")
        self.data_config = dict(data_config)
        self.aspect = aspect
        self.normalize = normalize
        self.resample = resample_filter(data_config.get("interpolation", "bicubic"))
        self._crop_size = crop_resize_size(data_config) if aspect == "crop" else None
        self._fill = tuple(int(255 * m) for m in data_config["mean"])  # LLaVA's expand2square colour
        self._mean = torch.tensor(data_config["mean"], dtype=torch.float32).view(-1, 1, 1)  # (3, 1, 1)
        self._std = torch.tensor(data_config["std"], dtype=torch.float32).view(-1, 1, 1)  # (3, 1, 1)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(3, H, W) of the tensors produced."""
        return tuple(self.data_config["input_size"])

    @staticmethod
    def load(path: str) -> Image.Image:
        """Open and fully decode ``path`` as RGB, as transformers reads images: EXIF orientation applied,
        transparency composited on white, 16-bit grey scaled to 8 bits (:func:`~lightning_mm.data.image_decode.
        decode_image`).

        Raises:
            ImageLoadError: ``image_missing`` when the file does not exist, ``image_unreadable`` when it cannot be
                decoded (decompression bombs included).
        """
        return decode_image(path)

    def fit(self, image: Image.Image) -> Image.Image:
        """``image`` (RGB) fitted to the input size with the aspect mode."""
        _, height, width = self.input_size
        if self.aspect == "pad":
            h, w = image.height, image.width
            if w * height > h * width:  # wider than the input: rows above and below
                canvas = (w, math.ceil(w * height / width))
            else:  # taller: columns left and right
                canvas = (math.ceil(h * width / height), h)
            if canvas != image.size:
                padded = Image.new("RGB", canvas, self._fill)
                padded.paste(image, ((canvas[0] - w) // 2, (canvas[1] - h) // 2))  # centred, offsets rounded down
                image = padded
            return image.resize((width, height), self.resample)
        if self.aspect == "resize":
            return image.resize((width, height), self.resample)
        scale_h, scale_w = self._crop_size
        if (self.data_config.get("crop_mode") or "center") == "squash":
            size = (scale_w, scale_h)
        elif scale_h == scale_w:  # the short side to the scale, the long one as torchvision and transformers round it
            short, long = sorted(image.size)
            other = int(scale_h * long / short)
            size = (scale_w, other) if image.width <= image.height else (other, scale_h)
        else:  # timm's ResizeKeepRatio: the side that needs the smaller ratio reaches its target
            ratio = min(image.height / scale_h, image.width / scale_w)
            size = (round(image.width / ratio), round(image.height / ratio))
        return _centre_crop(image.resize(size, self.resample), height, width)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) tensor of one image (converted to RGB as :meth:`load` does): uint8, or float32 normalised with
        ``normalize=True``."""
        fitted = self.fit(image if image.mode == "RGB" else to_rgb(image))
        x = torch.from_numpy(np.array(fitted, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # (3, H, W)
        if not self.normalize:
            return x
        return (x.float().div(255) - self._mean) / self._std  # (3, H, W) float32, as timm's ToTensor + Normalize

    def load_many(self, paths: list[str]) -> torch.Tensor:
        """(n, 3, H, W) tensor of the images at ``paths``, in order (uint8, or float32 with ``normalize=True``)."""
        return torch.stack([self(self.load(p)) for p in paths])  # (n, 3, H, W)
