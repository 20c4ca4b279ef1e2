"""apply_placements on a plain network (no Lightning) and the deprecated import paths of the placement layer."""

from __future__ import annotations

import importlib

import pytest
import torch

import lightning_mm.placement as placement
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


@pytest.mark.parametrize("old", ["placement", "lora", "lora_dropout"])
def test_old_paths_warn_and_give_the_same_objects(old):
    alias = importlib.import_module(f"lightning_mm.callbacks.{old}")
    new = importlib.import_module(f"lightning_mm.placement.{old}")
    assert alias.__all__ == new.__all__ and set(alias.__all__) <= set(placement.__all__)
    for name in alias.__all__:
        with pytest.warns(DeprecationWarning, match=f"callbacks.{old}.{name} moved to lightning_mm.placement.{name}"):
            assert getattr(alias, name) is getattr(new, name)
    with pytest.raises(AttributeError):
        alias.not_a_name  # noqa: B018
