"""Training runs on a streamed Hugging Face dataset for the resume and exact-once tests.

``python tests/data/hf_resume_worker.py OUT_DIR --steps N [--kill-at K] [--resume CKPT] [--ddp] [--read-map]``: the
tiny model trained for N steps on the Parquet files ``OUT_DIR/data/*.parquet`` (written by the test), streamed,
through :class:`~lightning_mm.data.HFDataModule` with 2 workers per rank and a seeded shard order and shuffle buffer.
Every step appends ``{"step", "loss", "ids"}`` to ``OUT_DIR/steps-<rank>.jsonl`` (as ``resume_worker.py`` does);
``ModelCheckpoint`` writes ``last.ckpt`` every step; ``--kill-at K`` SIGKILLs the process when step K starts. ``--reference DIR`` then trains the uninterrupted run
into ``DIR`` (its own data copy) in the same processes, which saves a launch of 2 ranks. With ``--read-map``, each rank
then reads one epoch of the same records map-style (the ``save_to_disk`` folder ``disk`` of the last run's folder, 2
workers) under the last run's trainer and writes the ids of its batches to ``map-<rank>.json`` there.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_mm import MultimodalModule
from lightning_mm.data import HFDataModule
from tests.data.resume_worker import KillAt, RecordSteps

TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"
WORKERS = 2


def datamodule(train: str | dict, streaming: bool) -> HFDataModule:
    """2 records a step per rank, 2 workers, a seeded order (shards shuffled, then a buffer of 6 rows)."""
    return HFDataModule(
        train=train,
        streaming=streaming,
        template="vicuna_v1",
        batch_size=2,
        num_workers=WORKERS,
        shuffle_buffer=6,
        group_by_length=False,
        seed=3,
    )


def run(out: Path, steps: int, kill_at: int | None = None, resume: str | None = None, ddp: bool = False) -> L.Trainer:
    """Train the tiny model for ``steps`` steps on the streamed Parquet files (see the module docstring)."""
    L.seed_everything(0, verbose=False)
    module = MultimodalModule(
        model="tiny",
        model_overrides={"tokenizer": str(TOKENIZER), "template": "vicuna_v1"},
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.0),
    )
    callbacks = [
        RecordSteps(out),
        ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=1, save_top_k=0, save_last=True),
    ]
    if kill_at is not None:
        callbacks.append(KillAt(kill_at))
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
    trainer.fit(module, datamodule(str(out / "data" / "*.parquet"), streaming=True), ckpt_path=resume)
    return trainer


def read_map_style(trainer: L.Trainer, out: Path) -> None:
    """One epoch of the map-style copy, read by this rank's loader under ``trainer``: its batches' ids to a file."""
    dm = datamodule(str(out / "disk"), streaming=False)
    dm.trainer = trainer  # the rank and world size of the run
    dm.bind(trainer.lightning_module.data_contract)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    ids = [[str(i) for i in batch["id"]] for batch in loader]
    (out / f"map-{trainer.global_rank}.json").write_text(json.dumps(ids))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--ddp", action="store_true")
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--read-map", action="store_true")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(200, exit=True)  # a hung run shows where it hangs, and ends
    torch.set_num_threads(1)
    trainer, out = run(args.out, args.steps, args.kill_at, args.resume, args.ddp), args.out
    if args.reference is not None:
        trainer, out = run(args.reference, args.steps, ddp=args.ddp), args.reference
    if args.read_map:
        read_map_style(trainer, out)


if __name__ == "__main__":
    main()
