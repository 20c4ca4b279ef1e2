"""Progress as plain lines, for output that is not a terminal (a log file, a pipe, a job scheduler's capture).

A terminal progress bar redraws one line in place; written to a file it is either nothing until the end or a stream of
control characters. :class:`ProgressLines` takes the progress bar's place and prints a whole line now and then::

    train  epoch 1/1  step 120/2000 (6%)  train/loss 1.2345  2.41 steps/s  77.1 samples/s  elapsed 0:50  eta 13:00
    val    step 500  val/answer_accuracy 0.8125  val/loss 0.5321

``lightning-mm`` puts it in place of the progress bar when its standard output is not a terminal; in a recipe it is a
callback like any other (``lightning_mm.callbacks.ProgressLines``), which then replaces the bar on a terminal too.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

import lightning as L
import torch
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

__all__ = ["ProgressLines", "format_duration"]


def format_duration(seconds: float) -> str:
    """``50`` -> ``0:50``; ``3725`` -> ``1:02:05``; unknown (inf, nan) -> ``?``."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _samples(batch: Any) -> int:
    """Samples in a batch: ``input_ids`` rows of a collated batch, else the first dimension of its first tensor."""
    if isinstance(batch, dict):
        batch = batch.get("input_ids", next(iter(batch.values()), None))
    if isinstance(batch, list | tuple):
        batch = batch[0] if batch else None
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) and batch.ndim else 0


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value) if value.numel() == 1 else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class ProgressLines(ProgressBar):
    """Lightning's progress bar as plain lines: epoch, step, the progress-bar metrics (mean since the previous line),
    steps/s and samples/s, elapsed time and an estimate of the time left; one line per validation with its metrics.

    Lines are written by the global-zero process only and flushed at once, so ``tail -f`` of a log shows them.

    Args:
        every_n_seconds: Seconds between two training lines (a line also follows the first step and ends each epoch).
            Also the interval of the batch lines of long validation, test and predict loops.
        every_n_steps: Optimiser steps between two training lines instead of a time (None: by time).
    """

    def __init__(self, every_n_seconds: float = 30.0, every_n_steps: int | None = None) -> None:
        super().__init__()
        if every_n_seconds < 0:
            raise ValueError(f"every_n_seconds must be >= 0, got {every_n_seconds}.")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {every_n_steps}.")
        self.every_n_seconds = every_n_seconds
        self.every_n_steps = every_n_steps
        self.stream: TextIO | None = None  # None: sys.stdout when a line is written
        self._enabled = True
        self._start = self._last_time = 0.0
        self._start_step = self._last_step = 0
        self._samples = 0
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._eval_last = 0.0

    # ------------------------------------------------------------------ ProgressBar interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            print(*args, **{"file": self.stream or sys.stdout, "flush": True, **kwargs})

    # ------------------------------------------------------------------ training
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last_time = time.monotonic()
        self._start_step = self._last_step = trainer.global_step
        self._reset_window()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._samples += _samples(batch)
        for key, value in trainer.progress_bar_metrics.items():
            if key.startswith("val"):  # the validation's own line shows those
                continue
            value = _scalar(value)
            if value is not None:
                self._sums[key] = self._sums.get(key, 0.0) + value
                self._counts[key] = self._counts.get(key, 0) + 1
        step = trainer.global_step
        if step == self._last_step:  # mid accumulation window: lines come after optimiser steps
            return
        if self.every_n_steps is not None:
            due = step - self._last_step >= self.every_n_steps
        else:
            due = time.monotonic() - self._last_time >= self.every_n_seconds
        if due or self._last_step == self._start_step:
            self._train_line(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > self._last_step:
            self._train_line(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = trainer.global_step - self._start_step
        elapsed = time.monotonic() - self._start
        self.print(f"done   {steps} steps in {format_duration(elapsed)}")

    def _reset_window(self) -> None:
        self._samples = 0
        self._sums.clear()
        self._counts.clear()

    def _train_line(self, trainer: L.Trainer) -> None:
        now, step = time.monotonic(), trainer.global_step
        window = max(now - self._last_time, 1e-9)
        parts = ["train", self._epoch(trainer), self._step(trainer, step)]
        parts += [f"{key} {self._sums[key] / self._counts[key]:.4f}" for key in sorted(self._sums)]
        parts.append(f"{(step - self._last_step) / window:.2f} steps/s")
        if self._samples:
            parts.append(f"{self._samples / window:.1f} samples/s")
        parts.append(f"elapsed {format_duration(now - self._start)}")
        total = trainer.estimated_stepping_batches
        done = step - self._start_step
        if math.isfinite(total) and done > 0:
            parts.append(f"eta {format_duration((total - step) * (now - self._start) / done)}")
        self.print("  ".join(parts))
        self._last_time, self._last_step = now, step
        self._reset_window()

    @staticmethod
    def _epoch(trainer: L.Trainer) -> str:
        epochs = trainer.max_epochs
        return f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs not in (None, -1) else "")

    @staticmethod
    def _step(trainer: L.Trainer, step: int) -> str:
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            return f"step {step}"
        return f"step {step}/{int(total)} ({100 * step / total:.0f}%)"

    # ------------------------------------------------------------------ validation, test, predict
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.count("/") <= 1}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if v is not None and k.startswith("val"))
        self.print(f"val    step {trainer.global_step}" + (f"  {shown}" if shown else ""))

    def _eval_start(self) -> None:
        self._eval_last = time.monotonic()

    def _eval_batch(self, name: str, batch_idx: int, totals: Any, dataloader_idx: int) -> None:
        now = time.monotonic()
        if now - self._eval_last < self.every_n_seconds:
            return
        self._eval_last = now
        total = totals[dataloader_idx] if isinstance(totals, list | tuple) and dataloader_idx < len(totals) else None
        of = f"/{int(total)}" if isinstance(total, int | float) and math.isfinite(total) else ""
        self.print(f"{name:<5}  batch {batch_idx + 1}{of}")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.global_step > self._last_step:
            self._train_line(trainer)  # the steps before this validation first
        self._eval_start()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._eval_batch("val", batch_idx, trainer.num_val_batches, dataloader_idx)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch("test", batch_idx, trainer.num_test_batches, dataloader_idx)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch("predict", batch_idx, trainer.num_predict_batches, dataloader_idx)
