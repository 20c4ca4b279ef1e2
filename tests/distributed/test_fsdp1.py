"""FSDP1: the block wrap policy and parameter grouping (no process group needed), and a 2-process CPU run.

Lightning's ``FSDPStrategy`` refuses the CPU; ``VLMFSDPStrategy`` hands FSDP the device itself, so FSDP1 runs on CPU
with gloo here exactly as it wraps on GPUs.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import FSDPStrategy, Strategy

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import Placement
from lightning_mm.distributed import (
    VLMBlockPolicy,
    VLMFSDPStrategy,
    clean_name,
    mixed_requires_grad_units,
    parameter_ndims,
    shard_units,
    split_decay_by_ndim,
)
from lightning_mm.optim import split_decay

UNITS = [
    "vision.model.blocks.0",
    "vision.model.blocks.1",
    "vision.model.blocks.2",
    "projector",
    "llm.model.layers.0",
    "llm.model.layers.1",
]


def _built(**placements: str) -> MultimodalModule:
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny")
    for component, mode in placements.items():
        module.set_placement(component, Placement(mode, r=2))
    module.configure_model()
    return module


def test_units_are_every_vision_block_the_projector_and_every_decoder_layer():
    module = _built(llm="lora")
    assert list(shard_units(module.network)) == UNITS


@pytest.mark.parametrize("root", ["network", "lightning_module"])
def test_policy_wraps_the_units_of_the_module_it_is_applied_to(root):
    module = _built(llm="lora")
    target = module.network if root == "network" else module
    policy = VLMBlockPolicy()  # created before the network exists, as a strategy does
    wrapped = policy._run_policy(target, set(), {"use_orig_params": True})  # FSDP's entry point
    names = {m: n for n, m in module.network.named_modules()}
    assert sorted(names[m] for m in wrapped) == sorted(UNITS)
    assert all(kwargs == {"use_orig_params": True} for kwargs in wrapped.values())
    # lm_head, tied to the input embeddings, stays in the root with them
    assert module.network.lm_head not in wrapped and module.network.llm.get_input_embeddings() not in wrapped


def test_policy_needs_a_built_network():
    with pytest.raises(TypeError, match="VisionLanguageModel"):
        VLMBlockPolicy()._run_policy(MultimodalModule(model="tiny"), set(), {})


def test_lora_units_mix_frozen_and_trainable_parameters():
    lora = mixed_requires_grad_units(_built(vision="frozen", projector="full", llm="lora").network)
    assert sorted(lora) == ["llm.model.layers.0", "llm.model.layers.1"]
    trainable, frozen = lora["llm.model.layers.0"]
    assert trainable == 14 and frozen == 9  # A and B of 7 projections; 7 base weights and 2 norms
    full_llm = mixed_requires_grad_units(_built(vision="frozen", projector="full", llm="full").network)
    assert list(full_llm) == ["<root>"]  # frozen patch embedding next to trainable token embeddings
    assert mixed_requires_grad_units(_built(vision="full", projector="full", llm="full").network) == {
        "<root>": mixed_requires_grad_units(_built().network)["<root>"]
    }  # the blocks after the feature layer and the final norm never train


def test_weight_decay_groups_survive_flattening():
    module = _built(llm="lora")
    llm = module.network.llm
    ndims = parameter_ndims(llm)
    expected = [[id(p) for p in group] for group in split_decay(llm.named_parameters())]
    with torch.no_grad():
        for p in llm.parameters():
            p.data = p.data.reshape(-1)  # what FSDP1 does to the original parameters (1-D views of shards)
    assert [len(g) for g in split_decay(llm.named_parameters())][0] == 0  # the plain rule now sees no matrix
    assert [[id(p) for p in group] for group in split_decay_by_ndim(llm.named_parameters(), ndims)] == expected
    assert len(expected[0]) == 28


def test_wrapper_prefixes_are_removed_from_names():
    name = "network.llm.model.layers.0._fsdp_wrapped_module._checkpoint_wrapped_module.mlp.up_proj.weight"
    assert clean_name(name) == "network.llm.model.layers.0.mlp.up_proj.weight"


def test_strategy_is_configurable_from_yaml_and_keeps_its_wrap_policy():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Strategy, "strategy")
    config = {
        "strategy": {
            "class_path": "lightning_mm.distributed.VLMFSDPStrategy",
            "init_args": {"sharding_strategy": "SHARD_GRAD_OP", "state_dict_type": "sharded"},
        }
    }
    strategy = parser.instantiate_classes(parser.parse_object(config))["strategy"]
    assert isinstance(strategy, VLMFSDPStrategy)
    assert isinstance(strategy.kwargs["auto_wrap_policy"], VLMBlockPolicy)
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy.sharding_strategy.name == "SHARD_GRAD_OP" and strategy._state_dict_type == "sharded"
    assert "auto_wrap_policy" not in VLMFSDPStrategy(wrap_blocks=False).kwargs


def test_lightning_refuses_fsdp_on_cpu_but_not_the_project_strategy():
    with pytest.raises(ValueError, match="requires a GPU"):
        L.Trainer(accelerator="cpu", devices=1, strategy=FSDPStrategy(), logger=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy=VLMFSDPStrategy(), logger=False)
    assert isinstance(trainer.strategy, VLMFSDPStrategy)


# ---------------------------------------------------------------- 2 processes
VARIANTS = ["uninterrupted", "sharded", "adapter_sharded"]


@pytest.fixture(scope="module")
def runs(launch, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fsdp1")
    launch("fsdp1", str(out), "--variants", ",".join([*VARIANTS, "dropout"]), "--activation-checkpointing")
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.distributed
@pytest.mark.parametrize("variant", VARIANTS)
def test_two_processes_match_a_single_process_run(variant, runs, single_process_run, worker):
    out, results = runs
    ref_losses, ref_trained, ref_eval = single_process_run
    torch.testing.assert_close(torch.tensor(results[variant]["losses"]), torch.tensor(ref_losses), rtol=1e-5, atol=0)
    trained = torch.load(out / variant / "trained.pt", weights_only=True)
    assert trained.keys() == ref_trained.keys()
    for name, expected in ref_trained.items():
        assert worker.relative_error(trained[name], expected) < 1e-4, name
    if variant == "uninterrupted":  # validation and generation through the root FSDP module, after fit
        assert results[variant]["val"]["val/loss"] == pytest.approx(ref_eval["val"]["val/loss"], rel=1e-5)
        assert results[variant]["predictions"] == ref_eval["predictions"]


@pytest.mark.distributed
def test_fused_lora_dropout_trains(runs, single_process_run, worker):
    worker.check_dropout_run(runs[1]["dropout"], single_process_run[0])


@pytest.mark.distributed
def test_optimiser_groups_and_placement_table_are_those_of_the_unsharded_model(runs, single_process_run):
    _, results = runs
    reference = single_process_run[2]
    for variant, result in results.items():
        assert result["groups"] == reference["groups"], variant  # weight decay split by the real shapes
        assert result["placement_table"] == reference["placement_table"], variant  # counts of whole parameters
    names = [name for name, _, _ in reference["groups"]]
    assert names == ["projector", "projector/no_decay", "llm"]


@pytest.mark.distributed
@pytest.mark.parametrize("variant", ["sharded", "adapter_sharded"])
def test_sharded_checkpoint_consolidates_into_one_loadable_file(variant, runs, worker, tmp_path):
    from lightning_mm.distributed import consolidate_checkpoint

    _, results = runs
    path = consolidate_checkpoint(results[variant]["checkpoint"], tmp_path / "one.ckpt")
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert not any("_fsdp_wrapped_module" in k for k in saved)
    assert any(".lora_A." in k for k in saved) and ("base_layer" in " ".join(saved)) == (variant == "sharded")
    module = worker.SeededModule.load_from_checkpoint(path)  # strict: every key has its parameter
    ours = module.state_dict()
    for name, expected in saved.items():
        torch.testing.assert_close(ours[name], expected, rtol=0, atol=0)
