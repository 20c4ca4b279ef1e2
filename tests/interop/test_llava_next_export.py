"""export_hf of LLaVA-NeXT / OneVision models: transformers' model and AutoProcessor loaded from the folder give, for a
raw image and prompt, the tiles, image tokens and logits our layout and network give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
)

import lightning_mm
from lightning_mm.families.llava_next.layout import AnyResLayout
from lightning_mm.interop.export import export_hf
from tests.interop.conftest import ASSETS, IMAGE_TOKEN_ID, rel_err
from tests.interop.test_llava_next import HF_CLASS
from tests.interop.tiny_anyres import NEXT_PINPOINTS, OV_ASPECT, OV_PINPOINTS, PATCH, TILE, make_hf


def _save(family: str, path):
    """save_pretrained of a tiny model, the test tokenizer and the family's processor (what the hub holds)."""
    make_hf(family).save_pretrained(path)
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    if family == "next":
        images = LlavaNextImageProcessor(
            size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=NEXT_PINPOINTS
        )
        processor = LlavaNextProcessor(
            image_processor=images,
            tokenizer=tok,
            patch_size=PATCH,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
    else:
        images = LlavaOnevisionImageProcessor(size={"height": TILE, "width": TILE}, image_grid_pinpoints=OV_PINPOINTS)
        processor = LlavaOnevisionProcessor(
            image_processor=images,
            tokenizer=tok,
            video_processor=LlavaOnevisionVideoProcessor(),
            num_image_tokens=(TILE // PATCH) ** 2,
            vision_feature_select_strategy="full",
            vision_aspect_ratio=OV_ASPECT,
        )
    processor.save_pretrained(path)
    return path


def _photo(height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(height * 1000 + width)
    small = rng.integers(0, 256, (max(2, height // 6), max(2, width // 6), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


@pytest.mark.parametrize("family", ["next", "onevision"])
def test_exported_folder_reads_raw_images_as_our_layout_and_network(family, tmp_path, float64):
    module = lightning_mm.create_model(f"hf:{_save(family, tmp_path / 'hf')}", pretrained=True)
    out = export_hf(module, tmp_path / "out")
    model = HF_CLASS[family].from_pretrained(out, dtype=torch.float64).eval()
    if family == "next":
        processor = AutoProcessor.from_pretrained(out, backend="pil")
    else:  # its video processor has no PIL backend: only the image processor is asked for one
        image_processor = AutoImageProcessor.from_pretrained(out, backend="pil")
        processor = LlavaOnevisionProcessor.from_pretrained(out, image_processor=image_processor)
    net = module.network.eval()
    layout = AnyResLayout(net.projector.geometry, module.image_data_config, net.image_token_id, normalize=True)
    for size in [(20, 50), (45, 17), (37, 61)]:
        image = _photo(*size)
        inputs = processor(text="a <image> b", images=image, return_tensors="pt")
        prepared = layout.prepare(image)
        ids = inputs["input_ids"]
        assert int((ids == IMAGE_TOKEN_ID).sum()) == len(layout.prompt_ids(size))
        pixels = inputs["pixel_values"][0]  # (n_tiles, 3, H, W)
        assert prepared.tiles.shape == pixels.shape
        assert (prepared.tiles - pixels).abs().max() < 1e-6
        with torch.no_grad():
            theirs = model(input_ids=ids, pixel_values=pixels[None].double(), image_sizes=inputs["image_sizes"]).logits
            hidden = net(ids, None, prepared.tiles.double(), torch.tensor([size]), torch.tensor([len(pixels)]))
            ours = net.lm_head(hidden)
        assert rel_err(ours, theirs) < 1e-6
