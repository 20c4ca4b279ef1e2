"""Image files decoded as transformers decodes them: EXIF orientation, transparency on white, 16-bit, every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as tvF
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import load_image, load_image_as_tensor

from lightning_mm.data import ImageLoadError, ImageProcessor
from lightning_mm.data.image_decode import image_size

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)  # (H, W, 3): every pixel different enough to tell apart


def _transformers(path) -> np.ndarray:
    """What transformers serves: ``load_image``'s EXIF transpose, then ``convert_to_rgb`` (transparency on white)."""
    return convert_to_rgb(ImageOps.exif_transpose(Image.open(path)), return_numpy=True)


def _rotated_jpeg(path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    Image.fromarray(PIXELS).save(path, quality=95, exif=exif)


def _rgba(path):
    alpha = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (12, 1))  # transparent on the left, opaque on the right
    Image.fromarray(np.dstack([PIXELS, alpha]), "RGBA").save(path)


def _palette(path):
    image = Image.fromarray(PIXELS).quantize(16)
    image.info["transparency"] = 3  # palette entry 3 is transparent (its colour is hidden)
    image.save(path, transparency=3)


def _grey_alpha(path):
    Image.fromarray(np.dstack([PIXELS[..., 0], PIXELS[..., 1]]), "LA").save(path)


def _grey(path):
    Image.fromarray(PIXELS[..., 2], "L").save(path)


def _cmyk(path):
    Image.fromarray(PIXELS).convert("CMYK").save(path, quality=95)


FILES = {
    "exif_rotated.jpg": _rotated_jpeg,
    "rgba.png": _rgba,
    "palette_transparency.png": _palette,
    "grey_alpha.png": _grey_alpha,
    "grey.png": _grey,
    "cmyk.jpg": _cmyk,
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_images_decode_as_transformers_serves_them(name, tmp_path):
    path = tmp_path / name
    FILES[name](path)
    ours = ImageProcessor.load(str(path))
    assert ours.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(ours), _transformers(path))


def test_exif_orientation_is_applied_as_load_image_does(tmp_path):
    path = tmp_path / "exif_rotated.jpg"
    _rotated_jpeg(path)
    ours = ImageProcessor.load(str(path))
    assert ours.size == (12, 20)  # (width, height): upright, no longer 20 x 12
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(load_image(str(path))))
    assert image_size(str(path)) == (20, 12)  # (height, width) from the header, upright too


def test_transparent_pixels_are_white_not_their_hidden_colour(tmp_path):
    path = tmp_path / "rgba.png"
    _rgba(path)
    ours = np.asarray(ImageProcessor.load(str(path)))
    assert (ours[:, 0] == 255).all()  # alpha 0: white
    np.testing.assert_array_equal(ours[:, -1], PIXELS[:, -1])  # alpha 255: the pixel itself
    # an in-memory RGBA image goes through the same conversion in the processor
    config = {"input_size": (3, 12, 20), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "nearest"}
    x = ImageProcessor(config, "resize")(Image.open(path))  # (3, 12, 20)
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), ours)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "gradient16.png"
    gradient = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))  # (4, 256)
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode == "I;16"
    ours = np.asarray(ImageProcessor.load(str(path)))  # (4, 256, 3)
    assert (ours == 255).mean() < 0.01  # PIL's convert("RGB") (and transformers with it) makes 99 % of it 255
    wide = load_image_as_tensor(str(path))  # (3, 4, 256) uint16: transformers' tensor decoding keeps 16 bits
    expected = tvF.to_dtype(wide, torch.uint8, scale=True).permute(1, 2, 0).numpy()  # torchvision's 16 -> 8 bits
    np.testing.assert_array_equal(ours, expected)


def test_a_decompression_bomb_is_an_unreadable_image_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(PIXELS).save(path)  # 240 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses images over twice the limit
    with pytest.raises(ImageLoadError, match="bomb.png.*DecompressionBombError") as err:
        ImageProcessor.load(str(path))
    assert err.value.reason == "image_unreadable"
    assert image_size(str(path)) is None  # the header alone is refused too: the size counts nothing
