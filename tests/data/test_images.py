"""Image preprocessing: timm's data config, LLaVA's aspect modes, uint8 or normalised output, RGB, load errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from lightning_mm.data import ASPECT_MODES, ImageLoadError, ImageProcessor

IMAGES = Path(__file__).resolve().parents[1] / "assets" / "llava" / "images"
MEAN, STD = (0.2, 0.4, 0.6), (0.5, 0.25, 0.2)
CONFIG = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": MEAN, "std": STD, "crop_pct": 0.9}


def _normalised(rgb: tuple[float, float, float]) -> torch.Tensor:
    return (torch.tensor(rgb) - torch.tensor(MEAN)) / torch.tensor(STD)  # (3,)


def _process(aspect: str, name: str = "blue_wide.png", config: dict = CONFIG, normalize: bool = True) -> torch.Tensor:
    proc = ImageProcessor(config, aspect, normalize=normalize)
    return proc(proc.load(str(IMAGES / name)))  # (3, H, W)


@pytest.mark.parametrize("aspect", ASPECT_MODES)
@pytest.mark.parametrize("name", ["blue_wide.png", "green_tall.png", "yellow_cross.png"])
def test_uint8_output_is_the_normalised_output_before_normalisation(aspect, name):
    raw = _process(aspect, name, normalize=False)  # the default
    assert raw.dtype == torch.uint8 and tuple(raw.shape) == (3, 32, 32) and raw.is_contiguous()
    expected = _process(aspect, name, normalize=True)  # (3, H, W) float32
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    torch.testing.assert_close((raw.float() / 255 - mean) / std, expected, rtol=0, atol=1e-5)


def test_uint8_is_the_default_and_pads_with_the_rounded_mean_colour():
    proc = ImageProcessor(CONFIG, "pad")
    assert not proc.normalize
    x = proc(proc.load(str(IMAGES / "blue_wide.png")))  # (3, 32, 32) uint8
    assert x.dtype == torch.uint8
    fill = torch.tensor([round(255 * m) for m in MEAN], dtype=torch.uint8)  # (3,)
    assert torch.equal(x[:, 0, :], fill[:, None].expand(3, 32))  # top row: padding
    many = proc.load_many([str(IMAGES / "blue_wide.png"), str(IMAGES / "red_circle.png")])  # (2, 3, 32, 32)
    assert many.dtype == torch.uint8 and tuple(many.shape) == (2, 3, 32, 32) and torch.equal(many[0], x)


def test_pad_fills_with_the_mean_colour_and_keeps_the_whole_image():
    x = _process("pad")  # blue_wide is 48x24: padded to 48x48, the top and bottom quarters are the mean colour
    assert tuple(x.shape) == (3, 32, 32)
    mean_rgb = torch.tensor([round(255 * m) / 255 for m in MEAN])
    expected = _normalised(tuple(mean_rgb.tolist()))
    assert torch.allclose(x[:, :7, :].mean(dim=(1, 2)), expected, atol=0.02)  # top band
    assert torch.allclose(x[:, -7:, :].mean(dim=(1, 2)), expected, atol=0.02)  # bottom band
    blue = _normalised((30 / 255, 60 / 255, 240 / 255))
    assert torch.allclose(x[:, 16, 16], blue, atol=0.02)  # the centre is the blue rectangle
    dark = _normalised((10 / 255, 10 / 255, 10 / 255))
    assert torch.allclose(x[:, 16, 0], dark, atol=0.05)  # the rectangle's black border is still there


def test_resize_distorts_but_does_not_pad():
    x = _process("resize")
    dark = _normalised((10 / 255, 10 / 255, 10 / 255))
    assert torch.allclose(x[:, 0, 0], dark, atol=0.05)  # first row is the image's own border, not padding
    blue = _normalised((30 / 255, 60 / 255, 240 / 255))
    rows_blue = [(x[:, r, 16] - blue).abs().max() < 0.05 for r in range(32)]
    assert sum(rows_blue) >= 12  # the 12-of-24-rows rectangle spans about half the height


def test_crop_keeps_the_centre_and_cuts_the_sides():
    x = _process("crop")
    blue = _normalised((30 / 255, 60 / 255, 240 / 255))
    # the centre square of the 48x24 image lies inside the rectangle horizontally: no dark column at mid-height
    assert bool(((x[:, 16, :] - blue[:, None]).abs().max(dim=0).values < 0.05).all())
    padded = _process("pad")
    assert not bool(((padded[:, 16, :] - blue[:, None]).abs().max(dim=0).values < 0.05).all())


@pytest.mark.parametrize("aspect", ASPECT_MODES)
@pytest.mark.parametrize("name", ["gray_square.png", "yellow_cross.png", "green_tall.png"])
def test_every_mode_gives_the_configured_size_in_rgb(aspect, name):
    config = {**CONFIG, "input_size": (3, 24, 40)}
    x = _process(aspect, name, config)
    assert tuple(x.shape) == (3, 24, 40) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert tuple(_process(aspect, name, config, normalize=False).shape) == (3, 24, 40)


def test_the_timm_config_of_a_tower_is_used_as_is():
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=48, embed_dim=32, depth=1, num_heads=2)
    config = timm.data.resolve_model_data_config(model)
    config["input_size"] = (3, 48, 48)
    proc = ImageProcessor(config, "crop", normalize=True)
    x = proc(proc.load(str(IMAGES / "red_circle.png")))
    assert tuple(x.shape) == (3, 48, 48)
    # normalised with the tower's own mean/std: the dark background maps to (20/255 - mean) / std
    bg = (torch.tensor([20, 20, 30]) / 255 - torch.tensor(config["mean"])) / torch.tensor(config["std"])
    assert torch.allclose(x[:, 0, 0], bg.float(), atol=0.05)


def test_load_errors_name_the_reason_and_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match="image missing.*nope.png") as err:
        ImageProcessor.load(str(tmp_path / "nope.png"))
    assert err.value.reason == "image_missing"
    with pytest.raises(ImageLoadError, match="image missing") as err:
        ImageProcessor.load(str(tmp_path))  # a folder is not an image file
    assert err.value.reason == "image_missing"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((IMAGES / "red_circle.png").read_bytes()[:60])
    with pytest.raises(ImageLoadError) as err:
        ImageProcessor.load(str(truncated))
    assert err.value.reason == "image_unreadable" and str(truncated) in str(err.value)


def test_bad_aspect_or_config_is_refused():
    with pytest.raises(ValueError, match="aspect must be one of"):
        ImageProcessor(CONFIG, "stretch")
    with pytest.raises(ValueError, match="lacks \\['mean', 'std'\\]"):
        ImageProcessor({"input_size": (3, 8, 8)})


def test_load_returns_rgb_for_grey_and_alpha_images():
    for name in ("gray_square.png", "yellow_cross.png"):
        assert Image.open(IMAGES / name).mode in ("L", "RGBA")
        assert ImageProcessor.load(str(IMAGES / name)).mode == "RGB"
