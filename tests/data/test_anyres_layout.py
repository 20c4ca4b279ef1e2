"""AnyResLayout: tiles as transformers' LLaVA-NeXT image processor cuts them, and the image-token run of each size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    LlavaNextImageProcessor,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionImageProcessorPil,
)

from lightning_mm.data.layout import FixedLayout, image_token_counts, sample_layout
from lightning_mm.families.llava_next.geometry import AnyResGeometry, num_tiles
from lightning_mm.families.llava_next.layout import AnyResLayout, fit_size
from lightning_mm.zoo import get_spec
from lightning_mm.zoo.contract import data_contract
from tests.models.test_anyres import IMAGE_TOKEN_ID, TOKENIZER

TILE = 56  # small tiles: the same arithmetic as 336 px, a fraction of the pixels
PINPOINTS = [[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]]
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
DATA_CONFIG = {"input_size": (3, TILE, TILE), "mean": MEAN, "std": STD, "interpolation": "bicubic", "crop_pct": 1.0}
GEOMETRY = AnyResGeometry(tuple(map(tuple, PINPOINTS)), TILE, 4)  # patch 14: 4 x 4 tokens a tile


def _photo(height: int, width: int, seed: int = 0) -> Image.Image:
    """A smooth random picture (bicubic resampling of noise would only measure rounding)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def test_fit_size_keeps_the_aspect_ratio_rounding_up():
    assert fit_size((480, 640), (672, 672)) == (504, 672)
    assert fit_size((100, 30), (168, 56)) == (168, 51)  # 30 * 1.68 = 50.4 -> 51


@pytest.mark.parametrize("size", [(40, 90), (130, 47), (60, 60), (75, 131)])
def test_tiles_equal_transformers_image_processor(size):
    image = _photo(*size)
    layout = AnyResLayout(GEOMETRY, DATA_CONFIG, IMAGE_TOKEN_ID, normalize=True)
    ours = layout.prepare(image)
    hf = LlavaNextImageProcessorPil(
        size={"shortest_edge": TILE},
        crop_size={"height": TILE, "width": TILE},
        image_grid_pinpoints=PINPOINTS,
        image_mean=list(MEAN),
        image_std=list(STD),
    )
    theirs = hf(image, return_tensors="pt")["pixel_values"][0]  # (n_tiles, 3, H, W)
    assert ours.size == size
    assert ours.tiles.shape == theirs.shape == (num_tiles(size, GEOMETRY), 3, TILE, TILE)
    # same PIL resampling, padding and cuts both sides: equal pixels (one uint8 level would be ~0.015 here)
    assert (ours.tiles - theirs).abs().max() < 1e-6


def test_uint8_tiles_by_default_and_prompt_ids_match_the_processor():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS
        ),
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    layout = AnyResLayout(GEOMETRY, DATA_CONFIG, IMAGE_TOKEN_ID)
    for size in [(40, 90), (130, 47), (60, 60)]:
        prepared = layout.prepare(_photo(*size))
        assert prepared.tiles.dtype == torch.uint8
        ids = processor(text="<image>", images=_photo(*size), return_tensors="pt")["input_ids"][0].tolist()
        assert [i for i in ids if i == IMAGE_TOKEN_ID] == layout.prompt_ids(size)


def test_tower_input_must_be_the_tile():
    with pytest.raises(ValueError, match="tower input 64x64 is not the tile size 56"):
        AnyResLayout(GEOMETRY, {**DATA_CONFIG, "input_size": (3, 64, 64)}, IMAGE_TOKEN_ID)


def test_untiled_images_equal_onevision_multi_image_processing():
    """A sample with several images: each is padded to a square with the mean colour and resized, one tile."""
    geometry = AnyResGeometry(tuple(map(tuple, PINPOINTS)), TILE, 4, max_tiles=9)
    config = {**DATA_CONFIG, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    layout = AnyResLayout(geometry, config, IMAGE_TOKEN_ID, normalize=True)
    images = [_photo(40, 90, seed=1), _photo(130, 47, seed=2)]
    hf = LlavaOnevisionImageProcessorPil(
        size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    theirs = hf([images], return_tensors="pt")["pixel_values"]  # (n_images, 1, 3, H, W): one tile each
    for image, pixels in zip(images, theirs, strict=True):
        ours = layout.prepare(image, tiled=False)
        assert ours.tiles.shape == pixels.shape == (1, 3, TILE, TILE)
        assert (ours.tiles - pixels).abs().max() < 1e-6
        assert len(layout.prompt_ids(ours.size, tiled=False)) == 4 * 4 + 1


def test_the_layout_of_a_model_comes_from_its_family():
    layout = data_contract(get_spec("tiny-llava-onevision")).layout
    assert isinstance(layout, AnyResLayout) and layout.geometry.max_tiles == 4
    assert isinstance(data_contract(get_spec("tiny")).layout, FixedLayout)


@pytest.mark.parametrize(("name", "untiled"), [("tiny-llava-next", False), ("tiny-llava-onevision", True)])
def test_onevision_reads_the_images_of_a_multi_image_sample_untiled(name, untiled):
    layout = data_contract(get_spec(name)).layout
    image, size = _photo(40, 70), (40, 70)
    assert sample_layout(layout, 1) is layout  # a single image is always tiled
    several = sample_layout(layout, 2)
    tiles = several.prepare(image).tiles
    assert len(tiles) == (1 if untiled else len(layout.prepare(image).tiles)) and len(layout.prepare(image).tiles) > 1
    assert several.prompt_ids(size) == layout.prompt_ids(size, tiled=not untiled)
    assert image_token_counts(layout, [size, size], layout.image_token_id) == [len(several.prompt_ids(size))] * 2
