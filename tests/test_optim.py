"""LR schedules are transformers' own: the module's scheduler gives transformers' learning rates step by step."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.optim import build_scheduler, warmup_schedule, warmup_steps


def _optimizer(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _lrs(scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


REFERENCES = {
    "cosine": lambda opt, w, t, r: get_cosine_with_min_lr_schedule_with_warmup(opt, w, t, min_lr_rate=r),
    "linear": lambda opt, w, t, r: get_linear_schedule_with_warmup(opt, w, t),
    "constant": lambda opt, w, t, r: get_constant_schedule_with_warmup(opt, w),
}


@pytest.mark.parametrize(
    ("schedule", "min_lr_ratio"), [("cosine", 0.0), ("cosine", 0.1), ("linear", 0.0), ("constant", 0.0)]
)
@pytest.mark.parametrize(("total", "warmup_ratio"), [(50, 0.03), (7, 0.3), (10, 0.0)])
def test_schedule_is_transformers_step_by_step(schedule, min_lr_ratio, total, warmup_ratio):
    ours = build_scheduler(_optimizer(), total, warmup_ratio, schedule, min_lr_ratio)
    ref = REFERENCES[schedule](_optimizer(), math.ceil(warmup_ratio * total), total, min_lr_ratio)
    assert _lrs(ours, total) == pytest.approx(_lrs(ref, total), rel=1e-12, abs=1e-15)


def test_cosine_values_written_out():
    lrs = _lrs(build_scheduler(_optimizer(1.0), 20, 0.2, "cosine", 0.1), 20)  # 4 warm-up steps, 16 decaying
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert lrs[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))  # half-way: 0.55
    assert lrs[-1] > 0.1 and min(lrs[4:]) == lrs[-1]


def test_bad_schedule_arguments_are_clear():
    with pytest.raises(ValueError, match="Unknown schedule 'step'"):
        build_scheduler(_optimizer(), 10, schedule="step")
    with pytest.raises(ValueError, match="min_lr_ratio=0.1 applies to the 'cosine' schedule only"):
        build_scheduler(_optimizer(), 10, schedule="linear", min_lr_ratio=0.1)


def test_warmup_schedule_is_a_deprecated_alias_with_the_same_values():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn = warmup_schedule(30, 0.1, "cosine", 0.2)
    assert any(issubclass(w.category, DeprecationWarning) and "build_scheduler" in str(w.message) for w in caught)
    ref = build_scheduler(_optimizer(1.0), 30, 0.1, "cosine", 0.2)
    assert [fn(k) for k in range(30)] == pytest.approx(_lrs(ref, 30))


class _RecordLR(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_module_trains_with_transformers_schedule(tmp_path, quiet_trainer):
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", warmup_ratio=0.25, schedule="cosine", min_lr_ratio=0.1)
    data = SyntheticVQADataModule(train_samples=16, val_samples=4, batch_size=2)
    record = _RecordLR()
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[record], default_root_dir=tmp_path)
    trainer.fit(module, data)
    peak = trainer.optimizers[0].defaults["lr"]
    ref = get_cosine_with_min_lr_schedule_with_warmup(_optimizer(peak), warmup_steps(8, 0.25), 8, min_lr_rate=0.1)
    assert len(record.lrs) == 8
    assert record.lrs == pytest.approx(_lrs(ref, 8))
