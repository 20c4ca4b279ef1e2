"""``PredictionWriter``: the rows ``predict_step`` returns, written as one JSON line per sample.

Each rank collects its rows (tagged with the dataset index Lightning reports for them) during ``predict``; at the end
of the epoch rank 0 gathers every rank's rows, orders them by dataset index and writes one JSONL file, so the file
reads in the order of the data whatever the number of processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_mm.data.collate import KEPT_KEY

__all__ = ["DEFAULT_FILENAME", "PredictionWriter", "read_predictions"]

DEFAULT_FILENAME = "predictions.jsonl"


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a predictions file written by :class:`PredictionWriter`, in file order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class PredictionWriter(BasePredictionWriter):
    """Writes the predictions of ``lightning-mm predict`` as JSON lines, one per sample, in the data's order.

    A row is what :meth:`~lightning_mm.MultimodalModule.predict_step` returns for a sample (``id``, ``prompt``,
    ``prediction``, ``answer`` when the data has one, ``images``: image paths, or sample indices for the synthetic
    task; ``category`` when the data has one), with ``index``, the sample's index in the prediction dataset, first.
    The rows of all data-parallel ranks are gathered on rank 0 and written there, ordered by ``index``; the path and
    the first rows are printed. When records of a batch were dropped while loading, each row gets its index by its
    position in the batch (the collator's ``kept``), never by its id: records that share an id keep their own.

    Args:
        output_path: File to write. None: ``predictions.jsonl`` in the run's log directory (``trainer.log_dir``, the
            logger's version directory; ``default_root_dir`` without a logger). A relative path is relative to the
            working directory.
        print_rows: How many of the first rows to print after writing (0: only the path).
    """

    def __init__(self, output_path: str | None = None, print_rows: int = 3) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self.print_rows = print_rows
        self.written_path: Path | None = None  # where the last predict epoch was written (rank 0)
        self._rows: list[dict[str, Any]] = []

    def resolve_path(self, trainer: L.Trainer) -> Path:
        """Where the rows go: ``output_path``, or ``predictions.jsonl`` under the run's log directory."""
        if self.output_path is not None:
            return Path(self.output_path)
        return Path(trainer.log_dir or trainer.default_root_dir) / DEFAULT_FILENAME

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        rows = list(prediction or [])
        if batch_indices is not None and len(rows) < len(batch_indices):  # records dropped while loading
            batch_indices = self._indices_of_kept(batch, batch_indices)
        if batch_indices is None or len(batch_indices) != len(rows):
            raise RuntimeError(
                f"PredictionWriter: batch {batch_idx} gave {len(rows)} rows for "
                f"{'unknown' if batch_indices is None else len(batch_indices)} dataset indices; predict_step must "
                "return one row (a dict) per sample, the predict dataloader must use a sampler Lightning can track "
                f"(the default), and a collator that drops records must say which it kept (batch key {KEPT_KEY!r})."
            )
        for index, row in zip(batch_indices, rows, strict=True):
            if not isinstance(row, dict):
                raise TypeError(f"PredictionWriter: predict_step returned a {type(row).__name__}; rows must be dicts.")
            self._rows.append({"index": int(index), "dataloader": dataloader_idx, **_jsonable(row)})

    @staticmethod
    def _indices_of_kept(batch: Any, indices: Sequence[int]) -> list[int] | None:
        """The dataset indices of the rows left after the collator dropped records, matched by position.

        The collator lists where each sample of the batch stood among the records it was given (``kept``); the
        records' ids play no part, so records that share an id keep their own index.
        """
        kept = batch.get(KEPT_KEY) if isinstance(batch, Mapping) else None
        if kept is None or any(not 0 <= int(k) < len(indices) for k in kept):
            return None
        return [int(indices[int(k)]) for k in kept]

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = self._gather(trainer)
        self._rows = []
        if not trainer.is_global_zero:
            return
        many_loaders = len({r["dataloader"] for r in rows}) > 1
        rows.sort(key=lambda r: (r["dataloader"], r["index"]))
        if not many_loaders:
            for r in rows:
                del r["dataloader"]
        path = self.resolve_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(path)
        self.written_path = path
        print(f"Wrote {len(rows)} predictions to {path}")
        for r in rows[: self.print_rows]:
            print("  " + json.dumps(r, ensure_ascii=False))

    def _gather(self, trainer: L.Trainer) -> list[dict[str, Any]]:
        """Every rank's rows on rank 0 (other ranks get an empty list)."""
        if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return list(self._rows)
        parts = [[] for _ in range(dist.get_world_size())] if dist.get_rank() == 0 else None
        dist.gather_object(self._rows, parts, dst=0)
        return [r for part in parts for r in part] if parts is not None else []
