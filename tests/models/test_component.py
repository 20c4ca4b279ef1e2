"""The component interface: each component answers its blocks, unused parameters, LoRA targets and units, and
freezing, placements, activation checkpointing and sharding all take the same answers."""

from __future__ import annotations

import re

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from lightning_mm.distributed import shard_units
from lightning_mm.models import (
    COMPONENTS,
    LanguageModelComponent,
    ModuleComponent,
    TimmTowerComponent,
    VisionTower,
    as_component,
)
from lightning_mm.models.component import checkpoint_activations
from lightning_mm.placement import Placement, apply_placement, apply_placements
from lightning_mm.zoo import build_network, get_spec


@pytest.fixture(scope="module")
def stage_tower() -> VisionTower:
    """A timm tower built from ``stages`` (MViTv2: 4 stages, no ``blocks``), read at stage -2 (index 2)."""
    torch.manual_seed(0)
    return VisionTower("mvitv2_tiny", model_kwargs={"img_size": 64}, feature_layer=-2)


def test_a_tower_built_from_stages_never_trains_the_stages_after_its_feature_layer(stage_tower):
    tower = stage_tower
    assert not hasattr(tower.model, "blocks") and len(tower.model.stages) == 4
    never_run = re.compile(r"model\.(stages\.3\.|norm\.)")  # the last stage and the final norm: stop_early skips them
    expected = {n for n, _ in tower.named_parameters() if never_run.match(n)}
    assert expected and set(tower.unused_parameter_names()) == expected
    apply_placement(tower, "vision", Placement("full"))
    assert {n for n, p in tower.named_parameters() if not p.requires_grad} == expected
    # sharded per stage, as before: the same interface answers both questions
    assert as_component(tower).shard_units() == list(tower.model.stages)


def test_lora_on_a_stage_tower_skips_the_stages_that_never_run(stage_tower):
    tower = VisionTower("mvitv2_tiny", model_kwargs={"img_size": 64}, feature_layer=-2)
    apply_placement(tower, "vision", Placement("lora", r=2))
    adapted = [n for n, m in tower.named_modules() if isinstance(m, LoraLayer)]
    assert adapted and all(re.match(r"model\.stages\.[012]\.", n) for n in adapted)
    assert any(n.startswith("model.stages.2.") for n in adapted)


@pytest.fixture(scope="module")
def network() -> nn.Module:
    torch.manual_seed(0)
    return build_network(get_spec("tiny"))


def test_each_component_of_the_tiny_network_answers(network):
    vision, projector, llm = (network.component(name) for name in COMPONENTS)
    assert isinstance(vision, TimmTowerComponent) and vision.module is network.vision
    assert isinstance(projector, ModuleComponent) and projector.module is network.projector
    assert isinstance(llm, LanguageModelComponent) and llm.module is network.llm
    assert vision.blocks() == list(network.vision.model.blocks) and len(vision.blocks()) == 3
    assert llm.blocks() == list(network.llm.model.layers) and len(llm.blocks()) == 2
    assert projector.blocks() == [] and projector.shard_units() == [network.projector]
    assert vision.checkpoint_units() == vision.blocks() and projector.checkpoint_units() == []
    assert {n.split(".")[2] for n in vision.unused_parameter_names()} == {"2", "weight", "bias"}  # block 2, norm
    assert projector.unused_parameter_names() == [] and llm.unused_parameter_names() == []
    assert "qkv" in vision.lora_targets() and llm.lora_targets() == projector.lora_targets() == ("all-linear",)
    with pytest.raises(ValueError, match="Unknown component 'audio'"):
        network.component("audio")


def test_sharding_units_are_each_components_units_in_forward_order(network):
    units = shard_units(network)
    expected = [*network.vision.model.blocks, network.projector, *network.llm.model.layers]
    assert list(units.values()) == expected
    assert list(units) == [
        *(f"vision.model.blocks.{i}" for i in range(3)),
        "projector",
        "llm.model.layers.0",
        "llm.model.layers.1",
    ]


class _NoLayers(nn.Linear):
    def get_decoder(self) -> nn.Module:
        return self


def test_an_llm_without_decoder_layers_cannot_be_sharded():
    with pytest.raises(ValueError, match=r"No decoder layers found in the LLM \(_NoLayers\)"):
        LanguageModelComponent(_NoLayers(2, 2), "llm").shard_units()


class _BlockProjector(nn.Module):
    """A projector with repeated blocks and one layer that never runs, described by its own interface."""

    def __init__(self, vision_dim: int, text_dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(vision_dim, text_dim)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(text_dim, text_dim), nn.GELU()) for _ in range(2))
        self.spare = nn.Linear(text_dim, text_dim)  # kept for checkpoints, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D_v) -> (N, L, D_t)
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return x

    def component_interface(self) -> ModuleComponent:
        return _BlockProjectorComponent(self, "projector")


class _BlockProjectorComponent(ModuleComponent):
    def blocks(self) -> list[nn.Module]:
        return list(self.module.blocks)

    def unused_parameter_names(self) -> list[str]:
        return [n for n, _ in self.module.named_parameters() if n.startswith("spare.")]

    def lora_targets(self) -> tuple[str, ...]:
        return ("inp",)


def test_a_new_projector_plugs_in_through_its_interface():
    torch.manual_seed(0)
    network = build_network(get_spec("tiny"))
    network.projector = _BlockProjector(network.vision.hidden_size, network.llm.config.hidden_size)
    apply_placements(network, {"projector": Placement("lora", r=2)})
    assert [n for n, m in network.projector.named_modules() if isinstance(m, LoraLayer)] == ["inp"]
    apply_placements(network, {"vision": Placement("frozen"), "llm": Placement("frozen")})
    network2 = build_network(get_spec("tiny"))
    network2.projector = _BlockProjector(network.vision.hidden_size, network.llm.config.hidden_size)
    apply_placements(network2, {"projector": Placement("full")})
    assert {n for n, p in network2.projector.named_parameters() if not p.requires_grad} == {
        "spare.weight",
        "spare.bias",
    }
    units = shard_units(network2)
    assert [n for n in units if n.startswith("projector")] == ["projector.blocks.0", "projector.blocks.1"]
    network2.enable_activation_checkpointing()
    assert all(b.forward.__func__.__name__ == "_checkpointed_forward" for b in network2.projector.blocks)
    assert network2.projector.inp.forward.__func__ is nn.Linear.forward


class _Counting(nn.Linear):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


def test_checkpointing_units_recompute_in_backward_only():
    layer = _Counting(4, 4)
    checkpoint_activations(layer)
    checkpoint_activations(layer)  # idempotent: one recompute, not two
    x = torch.randn(2, 4, requires_grad=True)
    out = layer(x)
    assert layer.calls == 1
    out.sum().backward()
    assert layer.calls == 2 and x.grad is not None  # recomputed once in backward
    layer.eval()
    layer(x).sum().backward()
    assert layer.calls == 3  # evaluation mode: a plain forward, nothing recomputed
