"""Tower families: a zoo tower equals transformers' CLIP / SigLIP vision model with the converted weights (float64)."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionModel, SiglipVisionModel

from lightning_mm.interop import apply_rules, tower_for_hf, tower_for_timm
from lightning_mm.zoo import build_network, get_spec
from tests.interop.conftest import perturb, rel_err

HF_CLASS = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel}


def _pair(name: str, **vision_kwargs):
    """(our tower, transformers' vision model with the same weights), float64, norms and biases perturbed."""
    torch.manual_seed(0)
    spec = get_spec(name).replace(vision_kwargs=vision_kwargs)
    tower = build_network(spec).vision.to(torch.float64).eval()
    perturb(tower)
    family = tower_for_timm(tower.model, spec.vision_model)
    hf = HF_CLASS[family.name](family.hf_config(tower.model)).to(torch.float64).eval()
    state, left = apply_rules(tower.model.state_dict(), family.rules, "hf")
    assert left == []
    hf_state = hf.state_dict()
    assert sorted(state) == sorted(hf_state)
    hf.load_state_dict(state)
    return tower, hf, family


def _features(tower, hf, family, x):
    hidden = hf(pixel_values=x, output_hidden_states=True).hidden_states
    layer = tower.feature_layer + 1 if tower.feature_layer >= 0 else tower.feature_layer
    theirs = hidden[layer]  # (N, P + L, D)
    if tower.drop_prefix_tokens:
        theirs = theirs[:, family.num_prefix_tokens :]
    return tower(x), theirs


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-siglip"])
def test_zoo_tower_equals_transformers(name):
    tower, hf, family = _pair(name)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ours, theirs = _features(tower, hf, family, x)
    assert ours.shape == theirs.shape
    assert rel_err(ours, theirs) < 1e-6


def test_siglip_with_exact_gelu_would_differ():
    # the SigLIP entries used timm's default exact GELU: transformers' SigLIP computes the tanh approximation
    tower, hf, family = _pair("tiny-siglip", act_layer="gelu")
    hf.config.hidden_act = "gelu_pytorch_tanh"
    for layer in hf.vision_model.encoder.layers if hasattr(hf, "vision_model") else hf.encoder.layers:
        layer.mlp.activation_fn = torch.nn.GELU(approximate="tanh")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ours, theirs = _features(tower, hf, family, x)
    assert rel_err(ours, theirs) > 1e-6


def test_unknown_transformers_tower_is_named():
    with pytest.raises(ValueError, match="Unsupported vision tower 'dinov2'"):
        tower_for_hf("dinov2")
