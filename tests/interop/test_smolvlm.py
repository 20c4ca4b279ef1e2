"""SmolVLM / Idefics3: our network equals transformers' (float64, 1e-6 relative), import and export both ways."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

import lightning_mm
from lightning_mm.families.smolvlm.layout import SmolVLMLayout
from lightning_mm.families.smolvlm.settings import layout_for_spec
from lightning_mm.interop.checkpoint import checkpoint_spec_fields
from lightning_mm.interop.export import to_hf_model
from lightning_mm.zoo import ModelSpec, build_network, get_spec
from tests.interop.conftest import rel_err
from tests.interop.smolvlm_fixtures import (
    LONGEST_EDGE,
    SEQ_LEN,
    TILE,
    image,
    make_hf,
    save_checkpoint,
    smolvlm_tokenizer,
)

#: (height, width): 3 x 2 tiles (tall), 2 x 3 tiles (wide), 3 x 3 tiles (square); + the global view each
IMAGE_SIZES = [(60, 37), (23, 45), (50, 50)]


@pytest.fixture(scope="module")
def tokenizer():
    return smolvlm_tokenizer()


def make_batch(tokenizer, sizes=IMAGE_SIZES) -> dict[str, torch.Tensor]:
    """Three right-padded samples: one image, two images, text only; tiles as ours and transformers' take them.

    Returns:
        ``input_ids``/``attention_mask`` (3, T); ``pixel_values`` (N_tiles, 3, TILE, TILE) float64 normalised (ours);
        ``hf_pixel_values`` (3, max tiles per sample, 3, TILE, TILE), zero-padded (transformers').
    """
    layout = SmolVLMLayout(tokenizer, image_seq_len=SEQ_LEN, tile_size=TILE, longest_edge=LONGEST_EDGE)
    gen = torch.Generator().manual_seed(0)

    def text(n):
        return torch.randint(10, 400, (n,), generator=gen).tolist()

    tiles = [layout.prepare(image(s, seed=i)).tiles.double() / 127.5 - 1.0 for i, s in enumerate(sizes)]
    rows = [
        [1, *text(3), *layout.prompt_ids(sizes[0]), *text(4)],
        [1, *text(2), *layout.prompt_ids(sizes[1]), *text(3), *layout.prompt_ids(sizes[2]), *text(2)],
        [1, *text(7)],
    ]
    per_sample = [[tiles[0]], [tiles[1], tiles[2]], []]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    most = max(sum(t.shape[0] for t in s) for s in per_sample)
    hf_pixels = torch.zeros(len(rows), most, 3, TILE, TILE, dtype=torch.float64)
    for i, s in enumerate(per_sample):
        if s:
            cat = torch.cat(s)
            hf_pixels[i, : cat.shape[0]] = cat
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.cat(tiles), "hf_pixel_values": hf_pixels}


def our_logits(network, b):
    with torch.no_grad():
        return network.lm_head(network(b["input_ids"], b["attention_mask"], b["pixel_values"]))  # (B, T, V)


def hf_logits(model, b):
    with torch.no_grad():
        return model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], pixel_values=b["hf_pixel_values"]
        ).logits


@pytest.mark.parametrize(("model_type", "tie"), [("smolvlm", False), ("idefics3", False), ("smolvlm", True)])
def test_imported_logits_equal_transformers(model_type, tie, tokenizer, float64, tmp_path):
    hf_model = make_hf(model_type, tie=tie).double()
    path = save_checkpoint(hf_model, tokenizer, tmp_path / model_type)
    spec = ModelSpec(name="t", **checkpoint_spec_fields(str(path)))
    assert spec.projector == "pixel_shuffle2_linear" and spec.feature_norm and spec.feature_layer == -1
    network = build_network(spec, pretrained=True).eval()
    b = make_batch(tokenizer)
    assert b["pixel_values"].shape == ((3 * 2 + 1) + (2 * 3 + 1) + (3 * 3 + 1), 3, TILE, TILE)
    ours, theirs = our_logits(network, b), hf_logits(hf_model, b)
    real = b["attention_mask"].bool()
    assert ours.dtype == torch.float64
    assert rel_err(ours[real], theirs[real]) < 1e-6


def test_export_round_trip_equals_and_loads_in_transformers(tokenizer, float64, tmp_path):
    hf_model = make_hf("smolvlm", seed=1).double()
    path = save_checkpoint(hf_model, tokenizer, tmp_path / "in")
    network = build_network(ModelSpec(name="t", **checkpoint_spec_fields(str(path))), pretrained=True).eval()
    exported = to_hf_model(network, "smolvlm")
    assert type(exported).__name__ == "SmolVLMForConditionalGeneration"
    saved = {k: v for k, v in hf_model.state_dict().items()}
    for key, value in exported.state_dict().items():
        assert torch.equal(value, saved[key]), key
    out = tmp_path / "out"
    exported.save_pretrained(out)
    reloaded = type(exported).from_pretrained(out, dtype=torch.float64).eval()
    b = make_batch(tokenizer)
    assert rel_err(hf_logits(reloaded, b), hf_logits(hf_model, b)) < 1e-12
    assert set(load_file(out / "model.safetensors")) == set(load_file(path / "model.safetensors"))


def test_create_model_imports_with_pretrained(tokenizer, float64, tmp_path):
    hf_model = make_hf("smolvlm", seed=2).double()
    path = save_checkpoint(hf_model, tokenizer, tmp_path / "ckpt")
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    ours = module.network.state_dict()
    assert torch.equal(ours["projector.proj.weight"], hf_model.model.connector.modality_projection.proj.weight)
    assert torch.equal(ours["vision.model.norm.weight"], hf_model.model.vision_model.post_layernorm.weight)
    assert module.image_token_id == 4
    assert "vision.model.norm.weight" not in module.network.vision.unused_parameter_names()


def test_a_scale_factor_without_a_projector_is_named(tokenizer, tmp_path):
    hf_model = make_hf("smolvlm")
    path = save_checkpoint(hf_model, tokenizer, tmp_path / "ckpt")
    config = (path / "config.json").read_text().replace('"scale_factor": 2', '"scale_factor": 5')
    (path / "config.json").write_text(config)
    with pytest.raises(ValueError, match="scale_factor=5"):
        checkpoint_spec_fields(str(path))


def test_a_llava_projector_cannot_be_written_as_smolvlm():
    network = lightning_mm.create_model("tiny", device="meta").network
    with pytest.raises(ValueError, match="last vision block through its final norm"):
        to_hf_model(network, "smolvlm")


def test_the_layout_of_an_imported_checkpoint_is_its_processors(tokenizer, tmp_path):
    path = save_checkpoint(make_hf("smolvlm"), tokenizer, tmp_path / "ckpt")
    spec = ModelSpec(name="t", **checkpoint_spec_fields(str(path)))
    layout = layout_for_spec(spec, tokenizer, SEQ_LEN)
    assert (layout.image_seq_len, layout.tile_size, layout.longest_edge) == (SEQ_LEN, TILE, LONGEST_EDGE)
    released = layout_for_spec(get_spec("smolvlm-256m"), tokenizer, 64)
    assert (released.image_seq_len, released.tile_size, released.longest_edge) == (64, 512, 2048)
    assert released.grid((480, 640)) == (3, 4)  # 2048 x 1536 -> 4 x 3 tiles of 512 (+ the global view)


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_exported_folder_loads_in_transformers_and_its_processor_writes_our_ids(family, tokenizer, float64, tmp_path):
    hf_model = make_hf(family, seed=3).double()
    path = save_checkpoint(hf_model, tokenizer, tmp_path / "in")
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    layout = module.image_layout
    out = lightning_mm.export_hf(module, tmp_path / "out", model_type=family)
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float64).eval()
    # the PIL backend resizes exactly as the layout does; SmolVLM's video processor has no PIL backend (torchvision
    # resamples slightly differently: within 2 uint8 levels)
    processor = AutoProcessor.from_pretrained(out, **({"backend": "pil"} if family == "idefics3" else {}))
    assert type(model).__name__ == f"{'SmolVLM' if family == 'smolvlm' else 'Idefics3'}ForConditionalGeneration"
    img = image((60, 37), seed=5)
    inputs = processor(text=["User:<image>What is it?"], images=[[img]], return_tensors="pt", add_special_tokens=False)
    ids = module.tokenizer.encode("User:", add_special_tokens=False)
    ids += layout.prompt_ids((60, 37)) + module.tokenizer.encode("What is it?", add_special_tokens=False)
    assert inputs["input_ids"][0].tolist() == ids
    tiles = layout.prepare(img).tiles  # (7, 3, TILE, TILE) uint8: normalised by our tower
    normalised = tiles.double() / 127.5 - 1.0
    atol = 1e-6 if family == "idefics3" else 2 / 127.5 + 1e-6
    torch.testing.assert_close(inputs["pixel_values"][0].double(), normalised, rtol=0, atol=atol)
    network = module.network.eval()
    with torch.no_grad():
        theirs = model(input_ids=inputs["input_ids"], pixel_values=normalised[None]).logits
        ours = network.lm_head(network(torch.tensor([ids]), None, tiles))
    assert rel_err(ours, theirs) < 1e-6
