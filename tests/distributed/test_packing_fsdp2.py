"""Packed rows on 2 processes (DDP and FSDP2, gloo) give the gradient of the same samples unpacked in one process.

The placed tiny model (LLM LoRA, full projector, frozen tower) with activation checkpointing; 8 samples with and
without images, packed into 4 rows of which each rank takes 2, against one padded batch of the 8 in one process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_mm import MultimodalModule
from lightning_mm.data.packing import PackedCollator
from tests.distributed.conftest import import_script, run_script

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("packing_worker.py")


@pytest.fixture(scope="module")
def packing_worker():
    return import_script(WORKER, "lightning_mm_packing_worker")


@pytest.fixture(scope="module")
def two_process_grads(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("packed") / "grads.pt"
    run_script(WORKER, str(out), timeout=240)
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def unpacked_grads(packing_worker, tmp_path_factory) -> dict[str, torch.Tensor]:
    return packing_worker.step_gradients(tmp_path_factory.mktemp("unpacked"), packed=False)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-12))


def test_the_samples_pack_into_rows_that_mix_images_and_text(packing_worker):
    module = MultimodalModule(model="tiny")
    dm = packing_worker.MixedSamples(packed=True, batch_size=2)
    dm.bind(module.data_contract)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and all(b["input_ids"].shape[0] == 2 for b in batches)
    rows = [row for b in batches for row in b["id"]]
    assert sorted(i for row in rows for i in row) == sorted(s["id"] for s in packing_worker.mixed_samples(dm))
    assert all(len(row) == 2 for row in rows), rows  # whole samples share rows
    assert any({i.split("-")[1] for i in row} == {"7", "1"} for row in rows), rows  # text-only with image samples
    assert isinstance(dm.train_dataloader().collate_fn, PackedCollator)


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_packed_two_process_gradient_equals_the_unpacked_one(kind, two_process_grads, unpacked_grads):
    grads = two_process_grads[kind]
    assert grads.keys() == unpacked_grads.keys()
    assert any(".lora_A." in n for n in grads) and any(".projector." in n for n in grads)
    errors = {name: _relative_error(grads[name], expected) for name, expected in unpacked_grads.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-5, f"{kind}: {worst} differs by {errors[worst]:.2e}"
