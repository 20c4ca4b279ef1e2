"""Training throughput in tokens: batch measures for Lightning's ``ThroughputMonitor``, and supervised tokens/s.

Lightning's :class:`~lightning.pytorch.callbacks.ThroughputMonitor` logs samples/s and, given a ``length_fn``,
items/s; with :func:`batch_size` and :func:`real_tokens` it logs ``train/device/samples_per_sec`` and
``train/device/items_per_sec`` (real, non-padding tokens per second; without the ``device/`` part: all ranks, when
there are several). :class:`SupervisedTokenThroughput` adds ``train/device/supervised_tokens_per_sec``: the targets
that carry loss (answers and their end-of-turn tokens), the tokens the model actually learns from.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch.callbacks import Callback

from lightning_mm.loss import count_supervised

__all__ = ["SupervisedTokenThroughput", "batch_size", "real_tokens", "supervised_tokens"]


def batch_size(batch: dict[str, Any]) -> int:
    """Samples in a collated batch (``batch_size_fn`` of ``ThroughputMonitor``)."""
    return int(batch["input_ids"].shape[0])


def real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding tokens of a collated batch, image tokens included (``length_fn`` of ``ThroughputMonitor``)."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def supervised_tokens(batch: dict[str, Any]) -> int:
    """Targets that carry loss in a collated batch (labels shifted by one, -100 excluded)."""
    return int(count_supervised(batch["labels"])) if batch.get("labels") is not None else 0


class SupervisedTokenThroughput(Callback):
    """Logs ``train/device/supervised_tokens_per_sec`` (and ``train/supervised_tokens_per_sec`` over all ranks).

    A rolling rate over the last ``window_size`` training batches (Lightning's
    :class:`~lightning.fabric.utilities.throughput.Throughput`, as ``ThroughputMonitor`` uses), logged at the
    trainer's ``log_every_n_steps``; validation time is left out of the clock.

    Args:
        window_size: Batches of the rolling window (no value is logged before the window is full).
    """

    def __init__(self, window_size: int = 100) -> None:
        super().__init__()
        if window_size < 2:
            raise ValueError(f"SupervisedTokenThroughput: window_size must be at least 2, got {window_size}")
        self.window_size = window_size
        self._throughput: Throughput | None = None
        self._t0 = 0.0
        self._paused_at: float | None = None
        self._tokens = 0
        self._batches = 0

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # else the clock stops before the kernels do
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._throughput = Throughput(world_size=trainer.world_size, window_size=self.window_size)
        self._t0, self._tokens, self._batches = self._now(trainer), 0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens += supervised_tokens(batch)
        self._batches += 1
        elapsed = self._now(trainer) - self._t0
        self._throughput.update(time=elapsed, batches=self._batches, samples=self._batches, lengths=self._tokens)
        metrics = self._throughput.compute()
        logged = {k: v for k, v in metrics.items() if k in ("device/items_per_sec", "items_per_sec")}
        for key, value in logged.items():
            name = "train/" + key.replace("items_per_sec", "supervised_tokens_per_sec")
            pl_module.log(name, float(value), on_step=True, on_epoch=False, rank_zero_only=True)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._throughput is not None and not trainer.sanity_checking:
            self._paused_at = self._now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._paused_at is not None:
            self._t0 += self._now(trainer) - self._paused_at  # validation does not count as training time
            self._paused_at = None
