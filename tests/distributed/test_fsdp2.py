"""FSDP2 (``VLMModelParallelStrategy``, 2 CPU processes, gloo): the tiny model with LLM LoRA and a full projector.

One launch trains every variant for 2 epochs x 2 steps (global batch 8, activation checkpointing on, gradient clipping
1.0): uninterrupted with validation and prediction, interrupted after epoch 1 and resumed from a sharded, a full, an
adapter-only sharded and an adapter-only full checkpoint, and in bf16-mixed. Each must match one process training
batch 8.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from lightning_mm.distributed import consolidate_checkpoint

pytestmark = pytest.mark.distributed

EXACT = ["uninterrupted", "sharded", "full", "adapter_sharded", "adapter_full"]


@pytest.fixture(scope="module")
def runs(launch, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fsdp2")
    launch("fsdp2", str(out), "--variants", ",".join([*EXACT, "bf16", "dropout"]), "--activation-checkpointing")
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("variant", EXACT)
def test_matches_a_single_process_run(variant, runs, single_process_run, worker):
    out, results = runs
    ref_losses, ref_trained, _ = single_process_run
    torch.testing.assert_close(torch.tensor(results[variant]["losses"]), torch.tensor(ref_losses), rtol=1e-5, atol=0)
    trained = torch.load(out / variant / "trained.pt", weights_only=True)
    assert trained.keys() == ref_trained.keys()
    assert any(".lora_A." in k for k in trained) and any(k.startswith("network.projector.") for k in trained)
    for name, expected in ref_trained.items():
        assert worker.relative_error(trained[name], expected) < 1e-4, name


def test_evaluation_and_generation_match(runs, single_process_run):
    _, results = runs
    _, _, reference = single_process_run
    ours = results["uninterrupted"]
    assert ours["val"]["val/loss"] == pytest.approx(reference["val"]["val/loss"], rel=1e-5)
    assert ours["val"]["val/answer_accuracy"] == reference["val"]["val/answer_accuracy"]
    assert ours["predictions"] == reference["predictions"] and len(ours["predictions"]) == 4


def test_bf16_mixed_tracks_float32(runs, single_process_run):
    _, results = runs
    losses, reference = results["bf16"]["losses"], single_process_run[0]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(reference), rtol=0, atol=1e-2)
    assert losses != reference  # it did run in bf16


def test_fused_lora_dropout_trains(runs, single_process_run, worker):
    worker.check_dropout_run(runs[1]["dropout"], single_process_run[0])


def _dcp_keys(path: Path) -> set[str]:
    keys = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    return {k.removeprefix("state_dict.") for k in keys if k.startswith("state_dict.")}


def test_checkpoints_are_sharded_or_whole_and_adapter_only_ones_hold_no_base(runs):
    out, results = runs
    base = "network.llm.model.layers.0.self_attn.q_proj.base_layer.weight"
    lora = "network.llm.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    sharded = Path(results["sharded"]["checkpoint"])
    assert {"__0_0.distcp", "__1_0.distcp", "meta.pt"} <= {p.name for p in sharded.iterdir()}  # one shard per rank
    keys = {
        "sharded": _dcp_keys(sharded),
        "adapter_sharded": _dcp_keys(Path(results["adapter_sharded"]["checkpoint"])),
        **{
            v: set(torch.load(results[v]["checkpoint"], weights_only=True)["state_dict"])
            for v in ("full", "adapter_full")
        },
    }
    for variant in ("sharded", "full"):
        assert {base, lora, "network.vision.model.patch_embed.proj.weight"} <= keys[variant]
    for variant in ("adapter_sharded", "adapter_full"):
        assert lora in keys[variant] and "network.projector.0.weight" in keys[variant]
        assert not any(k.startswith("network.vision.") or "base_layer" in k for k in keys[variant]), variant


def test_optimiser_groups_and_placement_table_are_those_of_the_unsharded_model(runs, single_process_run):
    _, results = runs
    reference = single_process_run[2]
    for variant, result in results.items():
        assert result["groups"] == reference["groups"], variant  # weight decay split by the real shapes
        assert result["placement_table"] == reference["placement_table"], variant  # counts of whole parameters
    names = [name for name, _, _ in reference["groups"]]
    assert names == ["projector", "projector/no_decay", "llm"]


@pytest.mark.parametrize("variant", ["full", "adapter_full"])
def test_whole_file_checkpoints_load_in_one_process(variant, runs, worker):
    _, results = runs
    path = results[variant]["checkpoint"]
    saved = torch.load(path, weights_only=True)["state_dict"]
    module = worker.SeededModule.load_from_checkpoint(path)  # no strategy: plain load_state_dict, strict
    assert module.placements["llm"].mode == "lora" and module.placements["vision"].mode == "frozen"
    assert module.base_mismatch == []  # adapter-only: the rebuilt base is the one the adapters were trained on
    ours = module.state_dict()
    for name in saved:
        torch.testing.assert_close(ours[name], saved[name], rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["sharded", "adapter_sharded"])
def test_sharded_checkpoints_consolidate_into_one_loadable_file(variant, runs, worker, tmp_path):
    _, results = runs
    path = consolidate_checkpoint(results[variant]["checkpoint"], tmp_path / "one.ckpt")
    module = worker.SeededModule.load_from_checkpoint(path)
    # the whole-file run trained the same way up to the same epoch
    whole = torch.load(results[variant.replace("sharded", "full")]["checkpoint"], weights_only=True)["state_dict"]
    ours = module.state_dict()
    assert module.placements["llm"].mode == "lora"
    for name, expected in whole.items():
        torch.testing.assert_close(ours[name], expected, rtol=1e-6, atol=1e-7)
