"""LLaVA-NeXT / LLaVA-OneVision zoo entries: their meta builds equal transformers' classes built from the released
configs (parameter counts, every weight name both ways), and the tiny entries tile and run."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, LlavaNextForConditionalGeneration, LlavaOnevisionForConditionalGeneration

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.families import family_for_model_type
from lightning_mm.families.llava_next.geometry import anyres_token_count, num_tiles
from lightning_mm.families.llava_next.projector import AnyResProjector
from lightning_mm.families.llava_next.zoo import LLAVA_NEXT_VICUNA_7B_HF_CONFIG, LLAVA_ONEVISION_0_5B_HF_CONFIG
from lightning_mm.zoo import build_network, get_spec

RELEASED = {
    "llava-next-vicuna-7b": ("llava_next", LLAVA_NEXT_VICUNA_7B_HF_CONFIG, LlavaNextForConditionalGeneration),
    "llava-onevision-0.5b": ("llava_onevision", LLAVA_ONEVISION_0_5B_HF_CONFIG, LlavaOnevisionForConditionalGeneration),
}
# counted on the meta device from the released configs (LLaVA-1.5-7B's 7,063,427,072 + the 4096-wide newline)
PARAMS = {"llava-next-vicuna-7b": 7_063_431_168, "llava-onevision-0.5b": 893_675_552}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_meta_build_equals_transformers_class_from_the_released_config(name):
    family, config, hf_class = RELEASED[name]
    with torch.device("meta"):
        hf = hf_class(AutoConfig.for_model(**config))
        net = build_network(get_spec(name), pretrained=False)
    n_hf = sum(p.numel() for p in hf.parameters())
    assert n_hf == sum(p.numel() for p in net.parameters()) == PARAMS[name]

    converter = family_for_model_type(family)[1]
    theirs, ours = hf.state_dict(), net.state_dict()
    to_ours, left = converter.to_ours(theirs, net)
    assert left == [] and sorted(to_ours) == sorted(ours)
    assert all(to_ours[k].shape == ours[k].shape for k in ours)
    to_hf, left = converter.to_hf(ours, net)
    assert left == [] and sorted(to_hf) == sorted(theirs)
    assert all(to_hf[k].shape == theirs[k].shape for k in theirs)

    written = converter.hf_config(net)  # what an export writes
    assert written.image_grid_pinpoints == config["image_grid_pinpoints"]
    assert written.vision_feature_layer == config["vision_feature_layer"]
    assert written.vision_feature_select_strategy == config["vision_feature_select_strategy"]
    if family == "llava_onevision":
        assert written.vision_aspect_ratio == "anyres_max_9"


def test_released_names_resolve_offline_to_the_zoo_entries():
    assert get_spec("hf:llava-hf/llava-v1.6-vicuna-7b-hf") is get_spec("llava-next-vicuna-7b")
    assert get_spec("hf:llava-hf/llava-onevision-qwen2-0.5b-ov-hf") is get_spec("llava-onevision-0.5b")
    next_spec, ov_spec = get_spec("llava-next-vicuna-7b"), get_spec("llava-onevision-0.5b")
    assert next_spec.template == "vicuna_v1" and next_spec.drop_prefix_tokens and next_spec.feature_layer == -2
    assert ov_spec.template == "chatml" and ov_spec.feature_layer == -1 and ov_spec.image_token_id == 151646
    assert ov_spec.image_tiling["vision_aspect_ratio"] == "anyres_max_9"
    assert ov_spec.vision_kwargs["pretrained_cfg_overlay"]["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", ["tiny-llava-next", "tiny-llava-onevision"])
def test_tiny_entries_tile_and_run(name):
    torch.manual_seed(0)
    net = build_network(get_spec(name)).eval()
    assert isinstance(net.projector, AnyResProjector)
    geometry = net.projector.geometry
    sizes = [(40, 90), (70, 33)]
    tiles = [num_tiles(s, geometry) for s in sizes]
    counts = [anyres_token_count(s, geometry) for s in sizes]
    ids = torch.full((1, 3 + sum(counts)), 7)
    ids[0, 1 : 1 + sum(counts)] = net.image_token_id
    pixels = torch.randint(0, 256, (sum(tiles), 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        hidden = net(ids, None, pixels, torch.tensor(sizes), torch.tensor(tiles))
    assert hidden.shape == (1, ids.shape[1], net.llm.config.hidden_size)
    assert torch.isfinite(hidden).all()


@pytest.mark.parametrize("name", ["tiny-llava-next", "tiny-llava-onevision"])
def test_fixed_size_data_trains_a_tiling_model_one_tile_per_image(name):
    """Today's data pipeline (one tile per image, a fixed count) reads each image as its view plus the newline."""
    torch.manual_seed(0)
    module = MultimodalModule(model=name)
    module.configure_model()
    assert module.num_image_tokens == 4 * 4 + 1
    dm = SyntheticVQADataModule(train_samples=4, val_samples=4, batch_size=4)
    dm.bind(module.data_contract)
    batch = next(iter(dm.train_dataloader()))
    loss_sum, n = module.compute_loss(module(batch), batch["labels"])
    (loss_sum / n).backward()
    assert module.network.projector.image_newline.grad.abs().sum() > 0  # the newline is read and trained
