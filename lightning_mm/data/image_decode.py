"""Decoding image files to RGB as transformers does, so that training, ``chat`` and an exported processor agree.

The conventions (transformers' ``image_utils.load_image`` and ``image_transforms.convert_to_rgb``):

* the EXIF orientation is applied (a phone photo stored sideways comes out upright);
* transparency (an alpha band, or a palette or grey image's ``transparency``) is composited on white;
* every other mode (grey, CMYK, YCbCr, ...) is converted with PIL's ``convert("RGB")``.

transformers clips 16-bit grey images (``I;16``) to 255 in that conversion; here they are scaled to 8 bits first,
keeping the high byte as torchvision's ``to_dtype(uint16 -> uint8, scale=True)`` does (PIL already reads 16-bit RGB
and RGBA PNGs that way).
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageLoadError", "decode_image", "image_size", "to_rgb"]

_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSED = {5, 6, 7, 8}  # orientations that swap width and height
_WIDE_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # 16-bit grey (``I``: 32-bit, read as 16-bit values)
#: What a broken or hostile file raises while it is opened, decoded or transposed.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError)


class ImageLoadError(OSError):
    """An image file is missing or cannot be decoded.

    Attributes:
        reason: ``image_missing`` or ``image_unreadable``.
        path: The file.
    """

    def __init__(self, reason: str, path: str, detail: str) -> None:
        super().__init__(f"{reason.replace('_', ' ')}: {path!r} ({detail})")
        self.reason = reason
        self.path = path


def _eight_bit_grey(image: Image.Image) -> Image.Image:
    """An ``L`` (or ``LA``, with its 16-bit transparent value) image of a 16-bit grey one: the high byte."""
    values = np.asarray(image, dtype=np.int64)  # (H, W)
    grey = Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), mode="L")
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return grey
    alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8), mode="L")
    return Image.merge("LA", (grey, alpha))


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB as transformers' ``convert_to_rgb`` writes it, 16-bit grey scaled to 8 bits first.

    Transparent pixels (alpha band, or a palette / grey ``transparency``) are composited on white; the EXIF
    orientation is not applied here (see :func:`decode_image`).
    """
    if image.mode in _WIDE_GREY:
        image = _eight_bit_grey(image)
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(path: str) -> Image.Image:
    """The RGB image of the file ``path``: decoded whole, EXIF orientation applied, transparency on white.

    Raises:
        ImageLoadError: ``image_missing`` when the file does not exist, ``image_unreadable`` when it cannot be
            decoded (a truncated or corrupt file, or a decompression bomb: more than twice PIL's
            ``Image.MAX_IMAGE_PIXELS``).
    """
    try:
        f = open(path, "rb")  # closed by the `with` below; no separate existence check (a stat per image)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ImageLoadError("image_missing", path, "no such file") from None
    except OSError as e:
        raise ImageLoadError("image_unreadable", path, f"{type(e).__name__}: {e}") from e
    try:
        with f:
            image = Image.open(f)
            image.load()  # decodes everything while the file is open
            ImageOps.exif_transpose(image, in_place=True)  # no copy when the orientation is already upright
            return to_rgb(image)
    except _DECODE_ERRORS as e:
        raise ImageLoadError("image_unreadable", path, f"{type(e).__name__}: {e}") from e


def image_size(path: str) -> tuple[int, int] | None:
    """(height, width) of the upright image in ``path``, from its header (nothing is decoded); None when the file
    cannot be read (loading it fails later, with the reason)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            # the base class reads the EXIF that came with the header; a PNG's own getexif() would decode the image
            orientation = Image.Image.getexif(image).get(_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return None
    return (width, height) if orientation in _TRANSPOSED else (height, width)
