"""LLaVA-NeXT and LLaVA-OneVision: our logits equal transformers' (float64, tiny random models, same weights), through
import (save_pretrained -> ours) and export (ours -> transformers' class -> save_pretrained -> from_pretrained)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlavaNextForConditionalGeneration, LlavaOnevisionForConditionalGeneration

from lightning_mm.families.llava_next.geometry import capped_shape, grid_shape, unpad_bounds
from lightning_mm.families.llava_next.projector import AnyResProjector
from lightning_mm.interop import checkpoint_spec_fields
from lightning_mm.interop.export import to_hf_model
from lightning_mm.zoo import ModelSpec, build_network
from tests.interop.conftest import rel_err
from tests.interop.tiny_anyres import SIZES, anyres_batch, geometry, make_hf

HF_CLASS = {"next": LlavaNextForConditionalGeneration, "onevision": LlavaOnevisionForConditionalGeneration}
MODEL_TYPE = {"next": "llava_next", "onevision": "llava_onevision"}


@pytest.fixture(params=["next", "onevision"])
def imported(request, tmp_path, float64):
    """(family, transformers model, our network imported from its save_pretrained folder)."""
    return _import(request.param, tmp_path)


def _import(family, tmp_path):
    hf = make_hf(family)
    hf.save_pretrained(tmp_path / family)
    spec = ModelSpec(name=family, **checkpoint_spec_fields(str(tmp_path / family)))
    return family, hf, build_network(spec, pretrained=True).eval()


def _ours(net, b):
    keys = ("input_ids", "attention_mask", "pixel_values", "image_sizes", "tiles_per_image")
    return net.lm_head(net(*(b[k] for k in keys)))


def _theirs(hf, b, **extra):
    keys = ("input_ids", "attention_mask", "pixel_values", "image_sizes")
    return hf(**{k: b[k] for k in keys}, **extra).logits


def test_the_test_images_exercise_unpadding_several_tiles_and_the_cap():
    for family in ("next", "onevision"):
        geo = geometry(family)
        grids = [grid_shape(s, geo) for s in SIZES]
        assert all(r * c >= 2 for r, c in grids)  # every image has several tiles
        bounds = [unpad_bounds(s, (r * geo.side, c * geo.side)) for s, (r, c) in zip(SIZES, grids, strict=True)]
        cut = [
            (b - t, ri - le) != (r * geo.side, c * geo.side)
            for (t, b, le, ri), (r, c) in zip(bounds, grids, strict=True)
        ]
        assert sum(cut) >= 2  # padding rows or columns removed
    geo = geometry("onevision")
    shapes = [
        (b - t, ri - le)
        for s in SIZES
        for (t, b, le, ri) in [unpad_bounds(s, tuple(x * geo.side for x in grid_shape(s, geo)))]
    ]
    assert any(capped_shape(sh, geo.side, geo.max_tiles) is not None for sh in shapes)  # bilinear downsampling runs
    assert any(capped_shape(sh, geo.side, geo.max_tiles) is None for sh in shapes)


def test_imported_logits_equal_transformers(imported):
    family, hf, net = imported
    assert isinstance(net.projector, AnyResProjector)
    b = anyres_batch(family)
    with torch.no_grad():
        ours, theirs = _ours(net, b), _theirs(hf, b)
    real = b["attention_mask"].bool()
    assert rel_err(ours[real], theirs[real]) < 1e-6


def test_onevision_multi_image_samples_use_the_base_view_only(tmp_path, float64):
    family, hf, net = _import("onevision", tmp_path)
    b = anyres_batch(family, tiled=False)  # two samples with two images each: one tile per image
    with torch.no_grad():
        ours = _ours(net, b)
        theirs = _theirs(hf, b, batch_num_images=torch.tensor([2, 2]))
    real = b["attention_mask"].bool()
    assert rel_err(ours[real], theirs[real]) < 1e-6


def test_export_round_trip_loads_in_transformers_with_equal_logits(imported, tmp_path):
    family, hf, net = imported
    exported = to_hf_model(net, MODEL_TYPE[family])
    assert type(exported) is HF_CLASS[family]
    exported.save_pretrained(tmp_path / "out")
    reloaded = HF_CLASS[family].from_pretrained(tmp_path / "out", dtype=torch.float64).eval()
    assert reloaded.config.image_grid_pinpoints == hf.config.image_grid_pinpoints
    if family == "onevision":
        assert reloaded.config.vision_aspect_ratio == hf.config.vision_aspect_ratio
    b = anyres_batch(family, seed=1)
    with torch.no_grad():
        ours, theirs = _ours(net, b), _theirs(reloaded, b)
    real = b["attention_mask"].bool()
    assert rel_err(ours[real], theirs[real]) < 1e-6
    torch.testing.assert_close(reloaded.model.image_newline, hf.model.image_newline, rtol=0, atol=0)


def test_wrong_tile_count_names_the_image(imported):
    family, _, net = imported
    b = anyres_batch(family)
    tiles = b["tiles_per_image"].clone()
    tiles[0] -= 1
    tiles[1] += 1
    with pytest.raises(
        ValueError, match=r"image 0 of the batch, of size \(30, 30\), is tiled as 2 x 2 \+ 1 base view, but 4 tiles"
    ):
        _ours(net, dict(b, tiles_per_image=tiles))


def test_transformers_4_layout_imports(tmp_path, float64):
    """The released llava-hf checkpoints store ``image_newline`` and ``vision_tower.vision_model.*`` (transformers 4)."""
    hf = make_hf("next")
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert "image_newline" in state  # what transformers 5.24 writes too
    renamed = {
        ("vision_tower.vision_model." + k.removeprefix("vision_tower.") if k.startswith("vision_tower.") else k): v
        for k, v in state.items()
    }
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    net = build_network(ModelSpec(name="v4", **checkpoint_spec_fields(str(tmp_path))), pretrained=True).eval()
    b = anyres_batch("next", seed=2)
    with torch.no_grad():
        ours, theirs = _ours(net, b), _theirs(hf, b)
    real = b["attention_mask"].bool()
    assert rel_err(ours[real], theirs[real]) < 1e-6
