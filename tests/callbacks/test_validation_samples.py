"""ValidationSamples' image and text rendering (the TensorBoard run itself is in test_tensorboard.py)."""

import pytest
import torch

from lightning_mm.callbacks import ValidationSamples
from lightning_mm.callbacks.validation_samples import collapse_image_spans, displayable_images, format_sample


def test_normalised_images_are_restored_and_put_side_by_side():
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.2)
    original = torch.rand(2, 3, 4, 5)  # (n, 3, H, W) in [0, 1]
    normalised = (original - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = displayable_images(normalised, mean, std)
    assert out.shape == (3, 4, 10)
    torch.testing.assert_close(out[:, :, :5], original[0])
    torch.testing.assert_close(out[:, :, 5:], original[1])


def test_uint8_images_are_scaled():
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = displayable_images(pixels, mean=(0.5, 0.5, 0.5), std=(0.1, 0.1, 0.1))  # uint8: no normalisation to undo
    assert out[:, 0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_sample_text_holds_prompt_answer_and_references():
    text = format_sample("<|im_start|>user\n<image> What color?", "red", ["red", "crimson"])
    assert "    <|im_start|>user\n    <image> What color?" in text  # a code block: markers are not read as HTML
    assert "generated: `red`" in text and "reference: `red` | `crimson`" in text


def test_at_least_one_sample():
    with pytest.raises(ValueError, match="num_samples must be at least 1"):
        ValidationSamples(num_samples=0)


def test_image_spans_show_one_placeholder_each():
    assert collapse_image_spans([1, 9, 9, 9, 2, 9, 9, 3], image_token_id=9) == [1, 9, 2, 9, 3]
    assert collapse_image_spans([9, 9, 4], image_token_id=9) == [9, 4]
