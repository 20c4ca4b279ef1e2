"""The exported LLaVA image processor reads images as training does, pixel for pixel, in every aspect mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from lightning_mm.data import ASPECT_MODES, ImageProcessor
from lightning_mm.families.llava.processor import hf_image_processor

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's: int != round
CONFIG = {"input_size": (3, 32, 32), "mean": MEAN, "std": STD, "interpolation": "bicubic", "crop_pct": 0.9}
# (height, width): odd and even margins of the crop (the short side goes to 35, then 32 are kept) and of the pad
SIZES = [(24, 48), (48, 24), (35, 42), (42, 35), (35, 39), (21, 46), (57, 33), (40, 40), (9, 61), (31, 32)]


def _levels(pixels: torch.Tensor) -> torch.Tensor:
    """transformers' normalised (1, 3, H, W) pixels back to uint8 levels (float64)."""
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return torch.as_tensor(pixels).double() * std * 255 + mean * 255


def _noise(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("crop_mode", ["center", "squash"])
@pytest.mark.parametrize("aspect", ASPECT_MODES)
def test_exported_image_processor_equals_training_pixel_for_pixel(aspect, crop_mode, tmp_path):
    config = {**CONFIG, "crop_mode": crop_mode}
    hf_image_processor(config, aspect).save_pretrained(tmp_path)
    theirs = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    ours = ImageProcessor(config, aspect)
    for k, (height, width) in enumerate(SIZES):
        image = _noise(height, width, k)
        expected = ours(image).double()  # (3, 32, 32) uint8 levels
        got = _levels(theirs(image, return_tensors="pt")["pixel_values"])[0]  # (3, 32, 32)
        assert (got - expected).abs().max() < 1e-3, (aspect, height, width)


def test_pad_uses_llavas_colour_and_keeps_the_image_centred():
    ours = ImageProcessor({**CONFIG, "interpolation": "nearest"}, "pad")
    x = ours(Image.new("RGB", (32, 16), (255, 0, 0)))  # (3, 32, 32): 8 rows above and below
    assert x[:, 0, 0].tolist() == [int(255 * m) for m in MEAN] == [122, 116, 104]  # round() would give 123, 117
    assert x[:, 8:24, :].eq(torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)).all()
