"""InternVL: our network equals transformers' (float64, 1e-6 relative, training mode), greedy decoding, the tiling of
its processor, export, released parameter counts and the errors of what we cannot compute."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    InternVLForConditionalGeneration,
)

import lightning_mm
from lightning_mm.families.internvl.zoo import INTERNVL3_1B_CONFIG, INTERNVL3_2B_CONFIG
from lightning_mm.interop.checkpoint import checkpoint_spec_fields
from lightning_mm.zoo import ModelSpec, build_network
from lightning_mm.zoo.contract import data_contract
from tests.interop.conftest import rel_err
from tests.interop.internvl_fixtures import (
    END,
    PER_TILE,
    SIZES,
    START,
    TILE,
    hf_processor,
    image,
    internvl_tokenizer,
    make_hf,
    normalised,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def tokenizer():
    return internvl_tokenizer()


def imported(hf_model, tokenizer, path):
    """(our network built from the saved checkpoint, its image layout)."""
    save_checkpoint(hf_model, tokenizer, path)
    spec = ModelSpec(name="t", **checkpoint_spec_fields(str(path)))
    return build_network(spec, pretrained=True), data_contract(spec, tokenizer).layout


def make_batch(layout, sizes=SIZES[:3], left: bool = False) -> dict[str, torch.Tensor]:
    """One image, two images, text only; (N_tiles, 3, TILE, TILE) float64 normalised tiles in order."""
    gen = torch.Generator().manual_seed(0)

    def text(n):
        return torch.randint(10, 400, (n,), generator=gen).tolist()

    tiles = [normalised(layout.prepare(image(s, seed=i)).tiles) for i, s in enumerate(sizes)]
    rows = [
        [1, *text(3), *layout.prompt_ids(sizes[0]), *text(4)],
        [1, *text(2), *layout.prompt_ids(sizes[1]), *text(3), *layout.prompt_ids(sizes[2]), *text(2)],
        [1, *text(7)],
    ]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r)
        mask[i, span] = 1
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.cat(tiles)}


@pytest.mark.parametrize("feature_layer", [-1, -2, 2])
def test_logits_equal_transformers_in_training_mode(feature_layer, tokenizer, float64, tmp_path):
    hf_model = make_hf(feature_layer=feature_layer)
    network, layout = imported(hf_model, tokenizer, tmp_path / "ckpt")
    assert network.vision.block_index == {-1: 2, -2: 1, 2: 1}[feature_layer]  # transformers' layer k>0 is block k-1
    b = make_batch(layout)
    assert [layout.num_tiles(s) for s in SIZES[:3]] == [3, 3, 5]  # 1x2 + thumbnail, 2x1 + thumbnail, 2x2 + thumbnail
    network.train(), hf_model.train()
    ours = network.lm_head(network(b["input_ids"], b["attention_mask"], b["pixel_values"]))  # (B, T, V)
    theirs = hf_model(**b).logits
    real = b["attention_mask"].bool()
    assert ours.dtype == torch.float64
    assert rel_err(ours[real], theirs[real]) < 1e-6


def test_greedy_tokens_with_the_cache_equal_transformers(tokenizer, float64, tmp_path):
    hf_model = make_hf(seed=1)
    network, layout = imported(hf_model, tokenizer, tmp_path / "ckpt")
    network.eval()
    b = make_batch(layout, left=True)
    kwargs = {"max_new_tokens": 16, "min_new_tokens": 16, "pad_token_id": 0, "do_sample": False}
    ours = network.generate(b["input_ids"], b["attention_mask"], b["pixel_values"], **kwargs)
    theirs = hf_model.generate(**b, **kwargs)[:, b["input_ids"].shape[1] :]
    assert ours.shape == (3, 16)
    assert torch.equal(ours, theirs)


def test_tiles_and_ids_equal_the_processor(tokenizer, tmp_path):
    _, layout = imported(make_hf(), tokenizer, tmp_path / "ckpt")
    processor = hf_processor(tokenizer)
    grids = set()
    for i, size in enumerate(SIZES):
        img = image(size, seed=i)
        ours = layout.prepare(img)
        out = processor(text=["<IMG_CONTEXT>"], images=[img], return_tensors="pt")
        assert ours.size == size and ours.tiles.dtype == torch.uint8
        assert out["pixel_values"].shape[0] == ours.tiles.shape[0] == layout.num_tiles(size)
        torch.testing.assert_close(out["pixel_values"].double(), normalised(ours.tiles), rtol=0, atol=1e-6)
        ids = out["input_ids"][0].tolist()
        assert ids[1:] == layout.prompt_ids(size)  # after the tokenizer's BOS
        assert ids[1] == START and ids[-1] == END and len(ids) - 3 == layout.num_tiles(size) * PER_TILE
        grids.add(layout.grid(size))
    assert grids == {(1, 2), (2, 1), (2, 2), (4, 1), (1, 1)}


def test_released_entries_count_as_transformers_builds_them():
    counts = {}
    for name, config in (("internvl3-1b", INTERNVL3_1B_CONFIG), ("internvl3-2b", INTERNVL3_2B_CONFIG)):
        ours = lightning_mm.create_model(name, device="meta").network
        with torch.device("meta"):
            theirs = InternVLForConditionalGeneration(AutoConfig.for_model(**config))
        counts[name] = sum(p.numel() for p in ours.parameters())
        assert counts[name] == sum(p.numel() for p in theirs.parameters())
    assert counts == {"internvl3-1b": 938_193_024, "internvl3-2b": 2_088_957_440}


def test_released_layout_tiles_as_internvl(tokenizer):
    spec = lightning_mm.get_spec("internvl3-1b")
    assert (spec.image_token, spec.image_token_id, spec.feature_layer) == ("<IMG_CONTEXT>", 151667, -1)
    module = lightning_mm.create_model("internvl3-1b", device="meta")
    assert module.num_image_tokens == 256
    # the layout alone, with the test tokenizer standing in for Qwen2.5's (it holds <img> and </img>)
    layout = data_contract(spec.replace(image_token_id=None), tokenizer).layout
    assert (layout.tile_size, layout.settings.max_tiles) == (448, 12)
    assert layout.grid((480, 640)) == (4, 3) and layout.num_tiles((480, 640)) == 13  # 4:3 -> 12 tiles + thumbnail
    assert layout.num_tiles((448, 448)) == 1


def test_exported_folder_loads_in_transformers_with_our_pixels_and_ids(tokenizer, float64, tmp_path):
    hf_model = make_hf(seed=3)
    path = save_checkpoint(hf_model, tokenizer, tmp_path / "in")
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    out = lightning_mm.export_hf(module, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["model_type"] == "internvl"
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float64).eval()
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    # the PIL image processor resizes exactly as the layout does (InternVL's video processor has no PIL backend)
    processor = AutoProcessor.from_pretrained(
        out, image_processor=AutoImageProcessor.from_pretrained(out, backend="pil")
    )
    assert type(processor.image_processor).__name__ == "GotOcr2ImageProcessorPil"
    layout = module.image_layout
    img = image((25, 60), seed=5)
    inputs = processor(text=["<IMG_CONTEXT>What is it?"], images=[img], return_tensors="pt")
    ids = [1, *layout.prompt_ids((25, 60)), *module.tokenizer.encode("What is it?", add_special_tokens=False)]
    assert inputs["input_ids"][0].tolist() == ids
    tiles = layout.prepare(img).tiles  # (3, 3, TILE, TILE) uint8
    assert tiles.shape == (3, 3, TILE, TILE)
    torch.testing.assert_close(inputs["pixel_values"].double(), normalised(tiles), rtol=0, atol=1e-6)
    network = module.network.eval()
    with torch.no_grad():
        theirs = model(input_ids=inputs["input_ids"], pixel_values=normalised(tiles)).logits
        ours = network.lm_head(network(torch.tensor([ids]), None, normalised(tiles)))
        before = hf_model(input_ids=inputs["input_ids"], pixel_values=normalised(tiles)).logits
    assert rel_err(ours, theirs) < 1e-6 and rel_err(before, theirs) < 1e-6


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("downsample_ratio", 0.3),
        ("vision_feature_layer", [-1, -2]),
        ("vision_feature_select_strategy", "full"),
        ("image_seq_length", 16),
    ],
)
def test_an_unsupported_config_names_its_key(key, value, tokenizer, tmp_path):
    path = save_checkpoint(make_hf(), tokenizer, tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config[key] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=key):
        checkpoint_spec_fields(str(path))


def test_qk_norm_of_internvit_6b_is_refused(tokenizer, tmp_path):
    path = save_checkpoint(make_hf(), tokenizer, tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["vision_config"]["use_qk_norm"] = True
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="use_qk_norm"):
        checkpoint_spec_fields(str(path))


def test_an_image_token_count_that_does_not_match_names_the_sample(tokenizer, float64, tmp_path):
    network, layout = imported(make_hf(), tokenizer, tmp_path / "ckpt")
    b = make_batch(layout)
    ids = b["input_ids"].clone()
    ids[1, (ids[1] == network.image_token_id).nonzero()[0]] = 20  # sample 1 loses one image token
    with pytest.raises(ValueError, match="first mismatching sample: index 1"):
        network(ids, b["attention_mask"], b["pixel_values"])


def test_tiny_entry_builds_and_tiles(float64):
    module = lightning_mm.create_model("tiny-internvl")
    layout = module.image_layout
    assert module.num_image_tokens == 4 and layout.tile_size == 32
    assert layout.num_tiles((40, 100)) == 4  # 3 x 1 tiles + thumbnail, under max_tiles 6
    ids = layout.prompt_ids((40, 100))
    assert ids.count(module.image_token_id) == 16 and len(ids) == 18
