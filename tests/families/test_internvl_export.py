"""InternVL export: a model without the thumbnail exports when it never has several tiles, and is refused, naming the
setting, when it has; the exported processor loads with the PIL image processor passed in (transformers' InternVL
video processor has no PIL backend, so ``AutoProcessor.from_pretrained(out, backend="pil")`` cannot load it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

import lightning_mm
from lightning_mm.families.internvl.layout import TilingSettings
from lightning_mm.families.internvl.processor import internvl_image_processor_settings
from lightning_mm.zoo import get_spec
from lightning_mm.zoo.contract import data_contract


def _layout(**tiling):
    return data_contract(get_spec("tiny-internvl").replace(image_tiling=tiling)).layout


def test_no_thumbnail_is_refused_only_where_transformers_would_add_one():
    layout = _layout(max_tiles=1, use_thumbnail=False)
    assert layout.settings == TilingSettings(max_tiles=1, use_thumbnail=False)
    assert internvl_image_processor_settings(layout, [0.5] * 3, [0.5] * 3)["max_patches"] == 1
    with pytest.raises(ValueError, match=r"image_tiling.use_thumbnail is false with max_tiles 6.*--format parts"):
        internvl_image_processor_settings(_layout(max_tiles=6, use_thumbnail=False), [0.5] * 3, [0.5] * 3)


def test_a_one_tile_model_without_thumbnail_exports_and_its_processor_loads_with_the_pil_image_processor(tmp_path):
    module = lightning_mm.create_model("tiny-internvl", image_tiling={"max_tiles": 1, "use_thumbnail": False})
    out = lightning_mm.export_hf(module, tmp_path / "out")
    with pytest.raises(ImportError, match="Video processor"):  # transformers' limit, documented in docs/families.md
        AutoProcessor.from_pretrained(out, backend="pil")
    processor = AutoProcessor.from_pretrained(
        out, image_processor=AutoImageProcessor.from_pretrained(out, backend="pil")
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 50, 3), dtype=np.uint8))
    inputs = processor(text=["<image> What color is the shape?"], images=[image], return_tensors="pt")
    layout = module.image_layout
    tile = layout.prepare(image).tiles  # (1, 3, 32, 32) uint8: one tile, no thumbnail
    assert tile.shape == (1, 3, 32, 32)
    tower = module.network.vision
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (tower.pixel_mean, tower.pixel_std))
    torch.testing.assert_close(inputs["pixel_values"], (tile / 255 - mean) / std, rtol=0, atol=1e-6)
    ids = inputs["input_ids"][0].tolist()
    assert ids[: len(layout.prompt_ids((20, 50)))] == layout.prompt_ids((20, 50))
