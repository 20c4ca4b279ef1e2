"""Training runs for the resume tests (killed with SIGKILL after a mid-epoch checkpoint, resumed) and the skip counts.

``python tests/data/resume_worker.py {synthetic|llava|skip} OUT_DIR --steps N [--kill-at K] [--resume CKPT] [--ddp]``:
the tiny model trained for N steps; every step appends ``{"step", "loss", "ids"}`` to ``OUT_DIR/steps-<rank>.jsonl``
(the rank's local loss and the ids of its batch); ``ModelCheckpoint`` writes ``last.ckpt`` every step. With
``--kill-at K`` the process kills itself (SIGKILL) when step K starts, after the checkpoint of step K was written.
``skip`` trains on ``OUT_DIR/train.jsonl`` (images relative to the LLaVA assets) with ``on_bad_sample="skip"`` and
:class:`~lightning_mm.callbacks.data_stats.DataStatsCallback`; rank 0 writes the logged ``data/`` metrics to
``OUT_DIR/stats.json``. Lightning's launcher starts rank 1 of a ``--ddp`` run by running this script again.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_mm import MultimodalModule
from lightning_mm.callbacks.data_stats import DataStatsCallback
from lightning_mm.data import LlavaDataModule, SyntheticVQADataModule

LLAVA_DIR = Path(__file__).resolve().parents[1] / "assets" / "llava"


class RecordSteps(Callback):
    """Appends each step's loss and batch ids to a file per rank (flushed: it survives a SIGKILL)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        row = {"step": trainer.global_step, "loss": float(outputs["loss"]), "ids": [str(i) for i in batch["id"]]}
        with open(self.out / f"steps-{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


class KillAt(Callback):
    """SIGKILLs its own process when step ``step`` starts (the checkpoint of the step before is on disk by then)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class WriteStats(Callback):
    """Rank 0 writes the logged ``data/`` metrics when fitting ends."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            stats = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("data/")}
            (self.out / "stats.json").write_text(json.dumps(stats))


def datamodule(task: str, ddp: bool = False, out: Path | None = None):
    """The data of each test: a few steps per epoch, 2 workers, a seeded order."""
    if task == "skip":
        return LlavaDataModule(
            train_path=str(out / "train.jsonl"),
            image_folder=str(LLAVA_DIR),
            template="vicuna_v1",
            on_bad_sample="skip",
            batch_size=4,
            num_workers=2,
            seed=3,
        )
    if task == "synthetic":
        n = 16 if ddp else 12  # 4 steps per epoch of 2 x 2 samples, or 6 of 2
        return SyntheticVQADataModule(train_samples=n, val_samples=4, batch_size=2, num_workers=2, seed=3)
    return LlavaDataModule(  # 8 records: 4 steps per epoch, batches grouped by length and modality
        train_path=str(LLAVA_DIR / "llava_tiny.json"),
        template="vicuna_v1",
        batch_size=2,
        num_workers=2,
        group_by_length=True,
        seed=3,
    )


def run(task: str, out: Path, steps: int, kill_at: int | None = None, resume: str | None = None, ddp: bool = False):
    """Train the tiny model for ``steps`` steps (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0, verbose=False)
    module = MultimodalModule(model="tiny", optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.0))
    callbacks = [
        RecordSteps(out),
        ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=1, save_top_k=0, save_last=True),
    ]
    if kill_at is not None:
        callbacks.append(KillAt(kill_at))
    if task == "skip":
        callbacks += [DataStatsCallback(), WriteStats(out)]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2 if ddp else 1,
        strategy="ddp" if ddp else "auto",
        max_steps=steps,
        max_epochs=100,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule(task, ddp, out), ckpt_path=resume)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["synthetic", "llava", "skip"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--ddp", action="store_true")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(200, exit=True)  # a hung run shows where it hangs, and ends
    torch.set_num_threads(1)
    run(args.task, args.out, args.steps, args.kill_at, args.resume, args.ddp)


if __name__ == "__main__":
    main()
