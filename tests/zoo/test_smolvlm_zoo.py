"""smolvlm-256m / smolvlm-500m: meta builds with exactly transformers' parameter counts, offline."""

from __future__ import annotations

import pytest
import torch
from transformers import Idefics3Config, Idefics3ForConditionalGeneration

import lightning_mm
from lightning_mm.families.smolvlm.zoo import SMOLVLM_256M_CONFIG, SMOLVLM_500M_CONFIG
from lightning_mm.models.token_reduction import PixelShuffleProjector
from lightning_mm.zoo import build_network, count_image_tokens, get_spec, list_models, parameter_counts

ENTRIES = {"smolvlm-256m": SMOLVLM_256M_CONFIG, "smolvlm-500m": SMOLVLM_500M_CONFIG}


def hf_counts(config: dict) -> dict[str, int]:
    with torch.device("meta"):
        model = Idefics3ForConditionalGeneration(Idefics3Config(**config))
    inner = model.model
    return {
        "vision": sum(p.numel() for p in inner.vision_model.parameters()),
        "projector": sum(p.numel() for p in inner.connector.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
    }


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_meta_build_has_transformers_parameter_count(name):
    ours, theirs = parameter_counts(name), hf_counts(ENTRIES[name])
    assert ours["total"] == theirs["total"]
    assert ours["vision"] == theirs["vision"] == 86_433_024  # SigLIP-B/16-512 without its pooling head
    assert ours["projector"] == theirs["projector"]
    assert ours["total"] == {"smolvlm-256m": 256_484_928, "smolvlm-500m": 507_482_304}[name]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entry_geometry(name):
    spec = get_spec(name)
    assert name in list_models("smolvlm-*")
    assert (spec.template, spec.image_token_id, spec.projector) == ("smolvlm", 49190, "pixel_shuffle4_linear")
    assert spec.checkpoint == f"HuggingFaceTB/SmolVLM-{name.split('-')[1].upper()}-Instruct"
    assert count_image_tokens(spec)[0] == 64  # (512 / 16)^2 / 4^2 per tile
    with torch.device("meta"):
        net = build_network(spec)
    assert isinstance(net.projector, PixelShuffleProjector) and net.projector.proj.bias is None
    assert net.vision.feature_norm and net.vision.block_index == 11
    assert net.llm.get_input_embeddings().num_embeddings == 49280
    assert net.vision.data_config()["interpolation"] == "lanczos"
    assert tuple(net.vision.pixel_mean) == (0.5, 0.5, 0.5)


def test_hf_name_of_the_released_checkpoint_resolves_offline_to_the_entry():
    assert get_spec("hf:HuggingFaceTB/SmolVLM-256M-Instruct").name == "smolvlm-256m"


def test_create_model_builds_the_module_on_meta_offline():
    module = lightning_mm.create_model("smolvlm-256m", device="meta")
    assert sum(p.numel() for p in module.network.parameters()) == 256_484_928
    assert all(p.is_meta for p in module.network.parameters())
