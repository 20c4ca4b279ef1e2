"""SmolVLM image splitting: the tiles and prompt ids transformers' SmolVLMProcessor writes, for several sizes."""

import pytest
import torch
from transformers import AutoTokenizer

from lightning_mm.families.smolvlm.layout import SmolVLMLayout
from tests.interop.smolvlm_fixtures import (
    ASSETS,
    LONGEST_EDGE,
    SEQ_LEN,
    SIZES,
    TILE,
    hf_processor,
    image,
    smolvlm_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer():
    return smolvlm_tokenizer()


def layout(tokenizer, split=True):
    return SmolVLMLayout(tokenizer, image_seq_len=SEQ_LEN, tile_size=TILE, longest_edge=LONGEST_EDGE, split=split)


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_prompt_ids_and_tiles_equal_the_processor(tokenizer, size, split):
    processor = hf_processor(tokenizer, split=split)
    img = image(size)
    theirs = processor(text=["User:<image>Describe it."], images=[[img]], return_tensors="pt", add_special_tokens=False)
    ours = layout(tokenizer, split)
    prefix = tokenizer.encode("User:", add_special_tokens=False)
    suffix = tokenizer.encode("Describe it.", add_special_tokens=False)
    ids = prefix + ours.prompt_ids(size) + suffix
    assert theirs["input_ids"][0].tolist() == ids
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == ours.num_image_tokens(size)
    prepared = ours.prepare(img)
    assert prepared.size == size
    n = ours.num_tiles(size)
    assert prepared.tiles.shape == (n, 3, TILE, TILE) and prepared.tiles.dtype == torch.uint8
    pixels = theirs["pixel_values"][0]  # (n, 3, TILE, TILE), normalised with mean = std = 0.5
    assert pixels.shape == (n, 3, TILE, TILE)
    torch.testing.assert_close(prepared.tiles.float() / 127.5 - 1.0, pixels, rtol=0, atol=1e-6)


def test_grids_written_out(tokenizer):
    ours = layout(tokenizer)
    # (20, 20) -> 80 x 80 -> 96 x 96: 3 x 3 tiles; (60, 37) -> 80 x 50 (even) -> 96 x 64: 3 x 2
    assert ours.grid((20, 20)) == (3, 3)
    assert ours.grid((60, 37)) == (3, 2)
    assert ours.grid((23, 45)) == (2, 3)
    assert ours.num_image_tokens((60, 37)) == (3 * 2 + 1) * SEQ_LEN
    assert SmolVLMLayout(tokenizer, image_seq_len=4, tile_size=32, longest_edge=32).grid((10, 60)) == (0, 0)


def test_marker_text_layout(tokenizer):
    text = SmolVLMLayout(tokenizer, image_seq_len=1, tile_size=32, longest_edge=64).prompt_text((64, 32))
    assert text == (
        "<fake_token_around_image><row_1_col_1><image>\n"
        "<fake_token_around_image><row_2_col_1><image>\n"
        "\n<fake_token_around_image><global-img><image><fake_token_around_image>"
    )


def test_a_tokenizer_without_the_markers_is_a_clear_error():
    with pytest.raises(ValueError, match="lacks.*<fake_token_around_image>"):
        SmolVLMLayout(AutoTokenizer.from_pretrained(ASSETS / "tokenizer"))
