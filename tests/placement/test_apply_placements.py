"""apply_placements on a plain network (no Lightning)."""

from __future__ import annotations

import pytest
import torch

from lightning_mm.placement import Placement, apply_placements
from lightning_mm.zoo import build_network, get_spec

PLACEMENTS = {"vision": Placement("lora", r=4, alpha=8.0), "projector": Placement("frozen"), "llm": Placement("lora")}


def _trainable(named) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in named}


def test_a_plain_network_trains_what_the_module_trains(build_module):
    torch.manual_seed(0)
    network = build_network(get_spec("tiny"))
    apply_placements(network, PLACEMENTS)
    module = build_module(PLACEMENTS)
    expected = {n.removeprefix("network."): t for n, t in _trainable(module.named_parameters()).items()}
    assert _trainable(network.named_parameters()) == expected
    assert any(".lora_A." in n for n in expected) and not all(expected.values())


def test_unused_blocks_are_frozen_even_without_a_placement():
    network = build_network(get_spec("tiny"))
    apply_placements(network, {})
    frozen = {n for n, p in network.named_parameters() if not p.requires_grad}
    assert frozen == {f"vision.{n}" for n in network.vision.unused_parameter_names()} and frozen


def test_an_unknown_component_is_refused_before_anything_changes():
    network = build_network(get_spec("tiny"))
    with pytest.raises(ValueError, match="Unknown component 'audio'"):
        apply_placements(network, {"vision": Placement("frozen"), "audio": Placement("full")})
    assert all(p.requires_grad for p in network.vision.parameters())
