"""Per-epoch data statistics: dropped-sample fraction, skip counts by reason, supervised-token fraction."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_mm.data.collate import EMPTY_KEY, SKIPPED_KEY
from lightning_mm.data.llava import BAD_INPUT_REASONS, DROP_REASONS
from lightning_mm.data.templates import IGNORE_INDEX

__all__ = ["DataStatsCallback"]

log = logging.getLogger(__name__)

REASONS = (*BAD_INPUT_REASONS, *DROP_REASONS, "other")


class _Tally:
    """Counts of one stage's epoch: samples delivered, tokens, supervised tokens, records dropped by reason."""

    def __init__(self) -> None:
        self.values = torch.zeros(3 + len(REASONS), dtype=torch.float64)  # (3 + R,)

    def update(self, batch: Mapping[str, Any]) -> None:
        v = self.values
        if not batch.get(EMPTY_KEY):  # a batch whose every record was dropped delivers nothing
            v[0] += int(batch["input_ids"].shape[0])
            mask = batch.get("attention_mask")
            v[1] += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
            labels = batch.get("labels")
            if labels is not None:
                v[2] += int((labels != IGNORE_INDEX).sum())
        for entry in batch.get(SKIPPED_KEY) or ():  # one reason per dropped record (or a list per sample)
            for r in [entry] if isinstance(entry, str) else entry or ():
                v[3 + (REASONS.index(r) if r in REASONS else len(REASONS) - 1)] += 1


def _dataset_of(loader: Any) -> Any:
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if len(loader) == 1 else None
    return getattr(loader, "dataset", None)


class DataStatsCallback(Callback):
    """Logs, once per epoch, how much of the data the model really saw and learnt from.

    Logged through the trainer's logger (keys under ``{prefix}/{stage}/``):

    * ``dropped_fraction``: records dropped over records seen. Dropped are the records left out when the files were
      read (bad input with ``on_bad_sample="skip"``; pro rata for a partial epoch) and the records dropped while
      loading (unreadable images, too long for ``max_length``); each counts once per epoch.
    * ``skipped``: records dropped in total, and ``skipped/{reason}`` for each reason that occurred (see
      :data:`~lightning_mm.data.llava.BAD_INPUT_REASONS` and :data:`~lightning_mm.data.llava.DROP_REASONS`).
    * ``supervised_fraction``: supervised label tokens over non-padding tokens (image tokens included).

    Counts are summed over data-parallel ranks. Works with any dataset; the file-level counts come from a
    ``skip_counts`` mapping on the dataset (as :class:`~lightning_mm.data.LlavaDataset` has), the load-time ones from
    the batch key ``skipped`` (one reason per record left out of the batch, see
    :class:`~lightning_mm.data.VLMCollator`).

    Args:
        prefix: Prefix of the logged keys.
        log_validation: Also log validation epochs (not the sanity check).
    """

    def __init__(self, prefix: str = "data", log_validation: bool = True) -> None:
        self.prefix = prefix
        self.log_validation = log_validation
        self._tally: dict[str, _Tally] = {}

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tally["train"] = _Tally()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._tally.setdefault("train", _Tally()).update(batch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._emit("train", trainer, pl_module, _dataset_of(trainer.train_dataloader))

    def _validating(self, trainer: L.Trainer) -> bool:
        return self.log_validation and not trainer.sanity_checking

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validating(trainer):
            self._tally["val"] = _Tally()

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._validating(trainer):
            self._tally.setdefault("val", _Tally()).update(batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validating(trainer):
            self._emit("val", trainer, pl_module, _dataset_of(trainer.val_dataloaders))

    # ------------------------------------------------------------------ computing and logging
    def stats(self, stage: str, trainer: L.Trainer | None = None, dataset: Any = None) -> dict[str, float]:
        """The statistics of ``stage``'s current epoch (summed over ranks when ``trainer`` runs several)."""
        values = self._tally.get(stage, _Tally()).values.clone()
        if trainer is not None and trainer.world_size > 1:
            values = trainer.strategy.reduce(values.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        delivered, tokens, supervised = (float(x) for x in values[:3])
        runtime = dict(zip(REASONS, (float(x) for x in values[3:]), strict=True))
        file_counts = dict(getattr(dataset, "skip_counts", None) or {})
        size = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else 0
        loaded = delivered + sum(runtime.values())  # records drawn this epoch: delivered or dropped while loading
        coverage = min(1.0, loaded / size) if size else 1.0
        file_dropped = sum(file_counts.values()) * coverage
        dropped = file_dropped + sum(runtime.values())
        out = {
            "dropped_fraction": dropped / max(file_dropped + loaded, 1.0),
            "skipped": sum(file_counts.values()) + sum(runtime.values()),
            "supervised_fraction": supervised / max(tokens, 1.0),
        }
        for reason in REASONS:
            count = runtime[reason] + file_counts.get(reason, 0)
            if count:
                out[f"skipped/{reason}"] = count
        return out

    def _emit(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, dataset: Any) -> None:
        stats = self.stats(stage, trainer, dataset)
        for key, value in stats.items():
            pl_module.log(f"{self.prefix}/{stage}/{key}", float(value), on_step=False, on_epoch=True, sync_dist=False)
        if trainer.is_global_zero:
            reasons = {k.split("/", 1)[1]: int(v) for k, v in stats.items() if k.startswith("skipped/")}
            log.info(
                "epoch %d %s data: dropped fraction %.4f, skipped %s, supervised-token fraction %.4f",
                trainer.current_epoch,
                stage,
                stats["dropped_fraction"],
                reasons or "none",
                stats["supervised_fraction"],
            )
