"""Training faults: a non-finite loss stops the run at its step and no checkpoint holds non-finite weights; SIGTERM and
SIGINT stop it with a resumable ``last.ckpt`` and exit status 143 / 130, and ``fit --ckpt_path last`` continues exactly.

The runs are ``lightning-mm fit --config tests/assets/faults_tiny.yaml`` (4 optimiser steps of 2 micro-batches; the
loss of every step in a CSV file). The classes below are also what the runs import by class path.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import NonFiniteError, TrainingFaults
from lightning_mm.cli import main
from lightning_mm.data import SyntheticVQADataModule

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "tests" / "assets" / "faults_tiny.yaml")
HERE = "tests.callbacks.test_faults"


class NaNLossAt(MultimodalModule):
    """The tiny model, whose loss is NaN on the first micro-batch of global step ``nan_at_step`` (on every rank, or
    only on rank ``nan_rank``)."""

    def __init__(
        self, nan_at_step: int = 2, nan_rank: int = -1, model: str = "tiny", warmup_ratio: float = 0.0
    ) -> None:
        super().__init__(model=model, warmup_ratio=warmup_ratio)
        self.nan_at_step = nan_at_step
        self.nan_rank = nan_rank

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        first = batch_idx % self.trainer.accumulate_grad_batches == 0
        rank = self.nan_rank < 0 or self.global_rank == self.nan_rank
        if self.trainer.global_step == self.nan_at_step and first and rank:
            loss = loss * float("nan")
        return loss


class SignalAt(Callback):
    """Sends ``signum`` to its own process when micro-batch ``batch`` (of the whole run, from 0) starts (on every
    rank, or only on rank ``rank``)."""

    def __init__(self, signum: int = 15, batch: int = 4, rank: int = -1) -> None:
        self.signum = signum
        self.batch = batch
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.fit_loop.total_batch_idx == self.batch and self.rank in (-1, trainer.global_rank):
            os.kill(os.getpid(), self.signum)


def _losses(run: Path, *versions: str) -> list[tuple[int, float]]:
    """(step, train/loss) of each logged step of the runs' CSV logs, in order."""
    rows = []
    for version in versions:
        with open(run / "logs" / version / "metrics.csv") as f:
            rows += [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]
    return rows


def _assert_same_run(got: list[tuple[int, float]], reference: list[tuple[int, float]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in reference] == list(range(4))
    assert [v for _, v in got] == pytest.approx([v for _, v in reference], rel=1e-6, abs=0)


def _fit(*args: str) -> int | None:
    return main(["fit", "--config", RECIPE, *args])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[tuple[int, float]]:
    """The uninterrupted run's (step, loss) rows."""
    run = tmp_path_factory.mktemp("uninterrupted")
    cwd = os.getcwd()
    os.chdir(run)
    try:
        assert _fit() == 0
    finally:
        os.chdir(cwd)
    return _losses(run, "run")


def _finite_weights(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


# ---------------------------------------------------------------------------------------------------- non-finite
def test_nan_loss_stops_at_its_step_and_no_checkpoint_holds_it(tmp_path, monkeypatch):
    """Before: the run trained on to the end, exit status 0, and last.ckpt (step 4) held NaN weights."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NonFiniteError, match=r"loss \(nan\) at global step 2 \(epoch 0\), batch 4, samples synth"):
        _fit("--model", f"{HERE}.NaNLossAt", "--model.nan_at_step", "2")
    checkpoints = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["last.ckpt"]
    assert torch.load(checkpoints[0], weights_only=False)["global_step"] == 2 and _finite_weights(checkpoints[0])


class _NaNGradient(MultimodalModule):
    """A finite loss whose gradient is NaN: d sqrt(x) / dx is infinite at 0, times 0."""

    def training_step(self, batch, batch_idx):
        weight = self.network.projector[0].weight
        return super().training_step(batch, batch_idx) + 0.0 * torch.sqrt(weight * 0.0).sum()


def test_non_finite_gradient_and_checkpoint_are_refused(quiet_trainer, tmp_path):
    L.seed_everything(0, verbose=False)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[TrainingFaults()])
    data = SyntheticVQADataModule(train_samples=2, batch_size=2)
    with pytest.raises(
        NonFiniteError, match=r"Non-finite gradients at global step 0 .* in network\.projector\.0\.weight"
    ):
        trainer.fit(_NaNGradient(model="tiny"), data)

    module = MultimodalModule(model="tiny")
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[TrainingFaults()])
    trainer.fit(module, data)
    with torch.no_grad():
        module.network.projector[0].bias[3] = float("inf")
    path = tmp_path / "bad.ckpt"
    with pytest.raises(NonFiniteError, match=r"Refusing to write a checkpoint at global step 1: .*projector\.0\.bias"):
        trainer.save_checkpoint(path)
    assert not path.exists()


def test_a_non_finite_loss_on_another_rank_stops_this_one_at_the_same_step(quiet_trainer, monkeypatch):
    """The decision is reduced over the ranks (all_reduce, in place). Two ranks are simulated: the reduction adds a
    rank whose loss was NaN, and this rank, whose losses are finite, stops at the same step."""
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[TrainingFaults()])
    monkeypatch.setattr(trainer.strategy, "world_size", 2, raising=False)
    other_rank = torch.tensor([1.0, 0.0])  # (loss, gradient) flags of the other rank
    monkeypatch.setattr(trainer.strategy, "reduce", lambda t, **_: t.add_(other_rank) if t.shape == (2,) else t)
    with pytest.raises(NonFiniteError, match=r"loss at global step 0 \(epoch 0\) on 1 of 2 ranks \(not this one\)"):
        trainer.fit(MultimodalModule(model="tiny"), SyntheticVQADataModule(train_samples=2, batch_size=2))


# ---------------------------------------------------------------------------------------------------- signals
@pytest.mark.slow
def test_sigterm_saves_last_and_the_resumed_run_continues_exactly(tmp_path, monkeypatch, reference):
    """A real SIGTERM to a ``lightning-mm fit`` process inside step 2's accumulation window (micro-batch 4).

    Before: exit status 0 and last.ckpt of step 2 (the ModelCheckpoint's): the resumed run repeated step 2.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    signal_at = [
        f"--trainer.callbacks+={HERE}.SignalAt",
        "--trainer.callbacks.signum=15",
        "--trainer.callbacks.batch=4",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_mm.cli", "fit", "--config", RECIPE, *signal_at],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "SIGTERM: stopping after this optimiser step" in proc.stderr
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3  # the whole window of step 2
    monkeypatch.chdir(tmp_path)
    assert _fit("--ckpt_path", "last", "--trainer.logger.init_args.version", "resumed") == 0
    _assert_same_run(_losses(tmp_path, "run", "resumed"), reference)


def test_sigint_saves_a_resumable_last_and_exits_130(tmp_path, monkeypatch):
    """Ctrl+C in micro-batch 1 (the last of step 0's window). Before: exit status 1 and no checkpoint at all."""
    monkeypatch.chdir(tmp_path)
    signal_at = [f"--trainer.callbacks+={HERE}.SignalAt", "--trainer.callbacks.signum=2", "--trainer.callbacks.batch=1"]
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a background job of a plain shell
    with pytest.raises(SystemExit) as stopped:
        _fit(*signal_at)
    assert stopped.value.code == 130
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 1  # resumes with the next batch of the epoch: the loader's saved position
    assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 2}]
