"""Ranks whose batches hold different kinds of samples: no image on either rank, or text-only on one and images on the
other.

Each rank must run the same collectives whatever its batch holds (a text-only batch sends one zero image through the
tower and projector and adds the result with weight 0). Two SGD steps of the tiny model with LLaVA's finetune placement
(frozen tower, full projector, LoRA on the LLM), in float64 with activation checkpointing, on 2 gloo processes x 2
samples under DDP and FSDP2: step 1 both ranks text-only, step 2 rank 0 text-only and rank 1 with images. The runs complete (before, DDP
hung or failed on unused parameters and FSDP crashed on mismatched all-gathers) and the projector and LoRA gradients
of each step equal one process training the same 4 samples as one batch.
"""

from __future__ import annotations

import pytest
import torch

from lightning_mm import MultimodalModule

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def one_process(worker, tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    return worker.text_only_grads(tmp_path_factory.mktemp("text-only-one-process"), "auto", 1, 4)


def test_step_1_is_text_only_and_step_2_text_only_on_rank_0(worker):
    module = MultimodalModule(model="tiny")
    dm = worker.MixedModalities(batch_size=1)
    dm.bind(module.data_contract)
    images = [int(b["image_counts"].sum()) for b in dm.train_dataloader()]
    assert images == [0, 0, 0, 0, 0, 1, 0, 1]  # rank r reads samples r, r + 2, ...


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_gradients_equal_one_process(strategy, launch, worker, one_process, tmp_path):
    out = tmp_path / "grads.pt"
    launch("text_only", str(out), "--strategy", strategy, timeout=150)
    steps = torch.load(out, weights_only=True)
    assert len(steps) == len(one_process) == 2
    for step, (ours, reference) in enumerate(zip(steps, one_process, strict=True), start=1):
        assert ours.keys() == reference.keys(), step
        projector = [n for n in reference if n.startswith("network.projector.")]
        lora_b = [n for n in reference if ".lora_B." in n]
        assert len(projector) == 4 and len(lora_b) == 14 and len(reference) == 4 + 28, step
        assert all(reference[n].abs().max() > 0 for n in lora_b), step  # the text trains the LLM
        for name, expected in reference.items():
            assert ours[name].dtype == torch.float64
            assert worker.relative_error(ours[name], expected) < 1e-6, f"step {step}: {name}"
        if step == 1:  # no image anywhere: the zero-weight image gives the projector zero gradients, reduced as usual
            assert all(bool((ours[n] == 0).all()) for n in projector)
        else:
            assert all(reference[n].abs().max() > 0 for n in projector)
