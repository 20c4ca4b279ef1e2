"""Token-exact loss normalisation: one step's gradient does not depend on how the batch is split.

8 samples whose supervised-target counts differ from micro-batch to micro-batch and from rank to rank: batch 8 in one
step, batch 2 with 4 accumulation steps, and 2 processes x batch 4 (DDP and FSDP2, gloo) give the same gradient; the
naive per-micro-batch mean does not.
"""

from __future__ import annotations

import pytest
import torch

from lightning_mm import MultimodalModule
from lightning_mm.loss import count_supervised

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def two_process_grads(launch, tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("grads") / "grads.pt"
    launch("grads", str(out))
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def single_process_grads(worker, tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    root = tmp_path_factory.mktemp("single-grads")
    return {
        "batch 8": worker.one_step_grads(root / "b8", 8, 1, "tokens"),
        "batch 2 x 4 accumulation": worker.one_step_grads(root / "b2x4", 2, 4, "tokens"),
        "batch 2 x 4 accumulation, naive mean": worker.one_step_grads(root / "b2x4-mean", 2, 4, "mean"),
    }


def test_micro_batches_and_ranks_hold_unequal_numbers_of_targets(worker):
    module = MultimodalModule(model="tiny")
    dm = worker.UnequalVQA(batch_size=2)
    dm.bind(module.data_contract)
    per_micro_batch = [int(count_supervised(batch["labels"])) for batch in dm.train_dataloader()]
    assert per_micro_batch == [3, 12, 4, 7]  # shifted targets of KEEP, two samples at a time
    per_rank = [sum(worker.KEEP[r::2]) for r in (0, 1)]
    assert len(set(per_rank)) == 2


@pytest.mark.parametrize(
    "split", ["batch 2 x 4 accumulation", "ddp/tokens", "fsdp2/tokens"], ids=["accumulation", "ddp", "fsdp2"]
)
def test_token_exact_gradient_is_the_same_for_every_split(split, worker, single_process_grads, two_process_grads):
    reference = single_process_grads["batch 8"]
    grads = {**single_process_grads, **two_process_grads}[split]
    assert grads.keys() == reference.keys() and len(reference) > 40
    errors = {name: worker.relative_error(grads[name], reference[name]) for name in reference}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-5, f"{split}: {worst} differs by {errors[worst]:.2e}"


@pytest.mark.parametrize("split", ["batch 2 x 4 accumulation, naive mean", "ddp/mean"], ids=["accumulation", "ddp"])
def test_naive_mean_gives_another_gradient(split, worker, single_process_grads, two_process_grads):
    reference = single_process_grads["batch 8"]
    grads = {**single_process_grads, **two_process_grads}[split]
    worst = max(worker.relative_error(grads[name], reference[name]) for name in reference)
    assert worst > 1e-2
