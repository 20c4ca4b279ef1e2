"""Training throughput in tokens: batch measures for Lightning's ``ThroughputMonitor``, and supervised tokens/s.

Lightning's :class:`~lightning.pytorch.callbacks.ThroughputMonitor` logs samples/s and, given a ``length_fn``,
items/s; with :func:`batch_size` and :func:`real_tokens` it logs ``train/device/samples_per_sec`` and
``train/device/items_per_sec`` (real, non-padding tokens per second; without the ``device/`` part: all ranks, when
there are several). :class:`SupervisedTokenThroughput` adds ``train/device/supervised_tokens_per_sec``: the targets
that carry loss (answers and their end-of-turn tokens), the tokens the model actually learns from.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_mm.loss import count_supervised

__all__ = ["SupervisedTokenThroughput", "batch_size", "real_tokens", "supervised_tokens"]


def batch_size(batch: dict[str, Any]) -> int:
    """Samples in a collated batch (``batch_size_fn`` of ``ThroughputMonitor``).

    A batch whose every record was dropped is the one padding row the device runs (1): ``ThroughputMonitor`` needs
    at least one sample per batch, and one token per sample (see :func:`real_tokens`).
    """
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

    A rolling rate over the last ``window_size`` training batches (supervised tokens between the first and the last
    batch of the window over the time between them, as Lightning's ``ThroughputMonitor`` computes its rates; times
    the number of ranks for the all-ranks value), logged at the trainer's ``log_every_n_steps``; validation time is
    left out of the clock. Batches without any supervised token (every record dropped, or cut by ``max_length``)
    count as such.

    Args:
        window_size: Batches of the rolling window (no value is logged before the window is full).
    """

    def __init__(self, window_size: int = 100) -> None:
        super().__init__()
        if window_size < 2:
            raise ValueError(f"SupervisedTokenThroughput: window_size must be at least 2, got {window_size}")
        self.window_size = window_size
        self._window: deque[tuple[float, int]] = deque(maxlen=window_size)  # (elapsed seconds, tokens so far)
        self._world_size = 1
        self._started = False
        self._t0 = 0.0
        self._paused_at: float | None = None
        self._tokens = 0

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # else the clock stops before the kernels do
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._window.clear()
        self._world_size, self._started = trainer.world_size, True
        self._t0, self._tokens = self._now(trainer), 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens += supervised_tokens(batch)
        self._window.append((self._now(trainer) - self._t0, self._tokens))
        if len(self._window) < self.window_size:
            return
        (t_first, n_first), (t_last, n_last) = self._window[0], self._window[-1]
        rate = (n_last - n_first) / max(t_last - t_first, 1e-9)  # supervised tokens per second on this device
        pl_module.log("train/device/supervised_tokens_per_sec", rate, on_step=True, on_epoch=False, rank_zero_only=True)
        if self._world_size > 1:
            total = rate * self._world_size
            pl_module.log("train/supervised_tokens_per_sec", total, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started and not trainer.sanity_checking:
            self._paused_at = self._now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._paused_at is not None:
            self._t0 += self._now(trainer) - self._paused_at  # validation does not count as training time
            self._paused_at = None
