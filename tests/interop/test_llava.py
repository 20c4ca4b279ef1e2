"""LLaVA converter: every key of transformers' model maps both ways (released configs, meta device); saved layouts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, LlavaForConditionalGeneration

import lightning_mm
from lightning_mm.families import family_for_model_type
from lightning_mm.families.llava.zoo import LLAVA_15_7B_HF_CONFIG, LLAVA_15_13B_HF_CONFIG
from lightning_mm.zoo import build_network, get_spec
from tests.interop.conftest import batch, rel_err

RELEASED = {"llava-1.5-7b": LLAVA_15_7B_HF_CONFIG, "llava-1.5-13b": LLAVA_15_13B_HF_CONFIG}
PARAMS_7B = 7_063_427_072  # llava-hf/llava-1.5-7b-hf


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_every_key_of_the_released_model_maps_both_ways_on_meta(name):
    with torch.device("meta"):
        hf = LlavaForConditionalGeneration(AutoConfig.for_model(**RELEASED[name]))
        net = build_network(get_spec(name), pretrained=False)
    theirs, ours = hf.state_dict(), net.state_dict()
    converter = family_for_model_type("llava")[1]

    to_ours, left = converter.to_ours(theirs, net)
    assert left == []
    assert sorted(to_ours) == sorted(ours)
    assert all(to_ours[k].shape == ours[k].shape for k in ours)

    to_hf, left = converter.to_hf(ours, net)
    assert left == []
    assert sorted(to_hf) == sorted(theirs)
    assert all(to_hf[k].shape == theirs[k].shape for k in theirs)

    n_hf = sum(p.numel() for p in hf.parameters())
    assert n_hf == sum(p.numel() for p in net.parameters())
    if name == "llava-1.5-7b":
        assert n_hf == PARAMS_7B
    assert converter.hf_config(net).to_diff_dict()["vision_feature_layer"] == -2


def test_released_names_resolve_offline_to_the_zoo_entries():
    assert get_spec("hf:llava-hf/llava-1.5-7b-hf") is get_spec("llava-1.5-7b")
    spec = get_spec("llava-1.5-13b")
    assert spec.checkpoint == "llava-hf/llava-1.5-13b-hf" and spec.image_token_id == 32000
    assert spec.template == "vicuna_v1" and spec.feature_layer == -2 and spec.drop_prefix_tokens


def _layout(state: dict[str, torch.Tensor], version: str) -> dict[str, torch.Tensor]:
    """transformers 5's save (as written), 4.x (``vision_tower.vision_model.``), or the 5.x module names."""
    out = {}
    for key, value in state.items():
        if version == "v4" and key.startswith("vision_tower."):
            key = "vision_tower.vision_model." + key.removeprefix("vision_tower.")
        elif version == "modules":
            key = (
                key.replace("language_model.model.", "model.language_model.", 1)
                .replace("language_model.lm_head.", "lm_head.", 1)
                .replace("vision_tower.", "model.vision_tower.", 1)
                .replace("multi_modal_projector.", "model.multi_modal_projector.", 1)
            )
        out[key] = value
    return out


@pytest.mark.parametrize("version", ["v4", "modules"])
def test_every_saved_layout_imports_to_the_same_logits(hf_checkpoint, float64, version):
    pair, hf_model, path = hf_checkpoint
    state = load_file(path / "model.safetensors")
    assert any(k.startswith("language_model.model.") for k in state)  # what transformers 5.24 writes
    renamed = _layout(state, version)
    if version == "v4" and "clip" in pair:
        assert "vision_tower.vision_model.embeddings.class_embedding" in renamed
    (path / "model.safetensors").unlink()
    save_file(renamed, path / "model.safetensors", metadata={"format": "pt"})
    net = lightning_mm.create_model(f"hf:{path}", pretrained=True).network.eval()
    b = batch()
    with torch.no_grad():
        ours = net.lm_head(net(**b))
        theirs = hf_model(**b).logits
    real = b["attention_mask"].bool()
    assert rel_err(ours[real], theirs[real]) < 1e-6
