"""Any-resolution tiling: the arithmetic on sizes, and the image-token counts transformers' processors write."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
)

from lightning_mm.families.llava_next.geometry import (
    AnyResGeometry,
    anyres_token_count,
    assemble_anyres,
    capped_shape,
    grid_shape,
    num_tiles,
    parse_max_tiles,
    unpad_bounds,
)

TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"
IMAGE_TOKEN_ID = 4  # <image> in the test tokenizer

# the released models' tiling: llava-v1.6 (CLIP-L/14 at 336, 24 x 24 tokens a tile) and OneVision (SigLIP/14 at 384)
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
OV_PINPOINTS = [[384 * r, 384 * c] for r in range(1, 7) for c in range(1, 7)]
NEXT = AnyResGeometry(tuple(map(tuple, NEXT_PINPOINTS)), 336, 24)
OV = AnyResGeometry(tuple(map(tuple, OV_PINPOINTS)), 384, 27, max_tiles=9)
# (height, width): small, square, wide, tall, a panorama, and a large one that OneVision caps (3 x 5 tiles)
SIZES = [(200, 300), (336, 336), (480, 640), (900, 400), (300, 1400), (1080, 1920)]


def test_grid_follows_the_best_fit_resolution():
    assert grid_shape((480, 640), NEXT) == (2, 2)  # (672, 672) keeps all 480 x 640 pixels
    assert grid_shape((300, 1400), NEXT) == (1, 3)  # a panorama: one row of three tiles
    assert grid_shape((900, 400), NEXT) == (3, 1)
    assert num_tiles((480, 640), NEXT) == 5  # 2 x 2 + the base view


def test_unpadding_cuts_the_letterbox_symmetrically():
    # 480 x 640 in a 48 x 48 map: the image fills 36 rows (48 * 480 / 640), 6 padding rows cut above and below
    assert unpad_bounds((480, 640), (48, 48)) == (6, 42, 0, 48)
    assert unpad_bounds((640, 480), (48, 48)) == (0, 48, 6, 42)
    assert unpad_bounds((336, 336), (24, 48)) == (0, 24, 12, 36)  # square image in a 1 x 2 grid
    assert unpad_bounds((500, 500), (48, 48)) == (0, 48, 0, 48)  # nothing to cut


def test_onevision_cap_shrinks_maps_larger_than_max_tiles():
    assert capped_shape((81, 81), 27, 9) is None  # 3 x 3 tiles: exactly the cap
    assert capped_shape((90, 81), 27, 9) is None  # ratio 1.05 <= 1.1: kept
    # ratio = sqrt(108 * 162 / (9 * 27^2)) = 1.633; (int(108 // r), int(162 // r)) = (66, 99)
    assert capped_shape((108, 162), 27, 9) == (66, 99)
    assert capped_shape((108, 162), 27, None) is None  # LLaVA-NeXT: no cap


def test_counts_by_hand():
    # 480 x 640 on LLaVA-NeXT: 576 base + 36 rows x (48 + 1 newline)
    assert anyres_token_count((480, 640), NEXT) == 576 + 36 * 49
    assert anyres_token_count((480, 640), OV, tiled=False) == 729 + 1


@pytest.mark.parametrize("value", ["anyres_max", "max_9", "anyres_max_x", "square"])
def test_bad_aspect_ratio_is_named(value):
    with pytest.raises(ValueError, match=f"vision_aspect_ratio '{value}'"):
        parse_max_tiles(value)


def test_pinpoints_must_be_multiples_of_the_tile():
    with pytest.raises(ValueError, match=r"\[\(336, 600\)\] are not positive multiples of the tile size 336"):
        AnyResGeometry(((336, 672), (336, 600)), 336, 24)


def _image(size: tuple[int, int]) -> Image.Image:
    height, width = size
    return Image.new("RGB", (width, height), (120, 30, 200))


def _processor(family: str):
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    if family == "next":
        images = LlavaNextImageProcessor(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=NEXT_PINPOINTS
        )
        return LlavaNextProcessor(
            image_processor=images,
            tokenizer=tok,
            patch_size=14,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
    images = LlavaOnevisionImageProcessor(size={"height": 384, "width": 384}, image_grid_pinpoints=OV_PINPOINTS)
    return LlavaOnevisionProcessor(
        image_processor=images,
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=729,
        vision_feature_select_strategy="full",
    )


@pytest.mark.parametrize("family", ["next", "onevision"])
def test_counts_equal_what_transformers_processors_write(family):
    processor = _processor(family)
    geometry = NEXT if family == "next" else OV
    ours = [anyres_token_count(s, geometry) for s in SIZES]
    theirs = []
    for size in SIZES:
        out = processor(text="<image> hi", images=_image(size), return_tensors="pt")
        theirs.append(int((out["input_ids"] == IMAGE_TOKEN_ID).sum()))
        assert out["pixel_values"].shape[1] == num_tiles(size, geometry)
    assert ours == theirs
    assert len(set(ours)) == len(SIZES)  # the sizes do give different counts
    if family == "onevision":
        assert ours[-1] < 729 + 9 * 729 + 3 * 27  # the cap bounds a 1080 x 1920 image (3 x 5 tiles) to about 9


def test_assembly_writes_as_many_features_as_the_count():
    geometry = AnyResGeometry(((8, 16), (16, 8), (16, 16), (24, 8)), 8, 2, max_tiles=2)
    sizes = [(10, 23), (31, 9), (8, 8)]
    tiles = [num_tiles(s, geometry) for s in sizes]
    feats = torch.randn(sum(tiles), 4, 5)  # (N_tiles, side^2, D)
    out = assemble_anyres(feats, sizes, tiles, geometry, torch.randn(5))
    assert out.shape == (sum(anyres_token_count(s, geometry) for s in sizes), 5)
