"""Packed training on 2 CPU processes: ``python tests/distributed/packing_worker.py OUT``.

One SGD step of the placed tiny model (LLM LoRA, full projector, frozen tower, activation checkpointing) on 8 samples
(image samples with 1-3 questions and text-only ones) packed into 4 rows, each rank taking 2 rows through Lightning's
distributed wrapper of :class:`~lightning_mm.data.packing.PackingSampler`: first under DDP, then under FSDP2. Rank 0
saves the gradients of each to OUT. Imported, :func:`step_gradients` runs the same step in one process, packed or
unpacked (the 8 samples in one padded batch): the reference.

Lightning's launcher starts rank 1 by running this script again with ``LOCAL_RANK=1``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from worker import SeededModule, StepGradients, _is_rank_zero, _strategy, placement_callbacks, sgd

from lightning_mm.data import SyntheticVQADataModule, SyntheticVQADataset, VLMCollator
from lightning_mm.data.packing import PackingSampler, packed_loader

ROWS = 4  # packed rows of the 8 samples: 2 per rank


def mixed_samples(dm: SyntheticVQADataModule) -> list[dict[str, Any]]:
    """8 samples of different lengths: image samples with 1, 3 and 2 questions, and text-only ones."""
    args = (dm.tokenizer, dm.contract.num_image_tokens, dm.image_data_config, dm.image_token_id)
    samples = []
    for q in (1, 3, 2):
        samples += [SyntheticVQADataset(*args, num_samples=4, seed=q, questions_per_image=q)[i] for i in (0, 1)]
    text = SyntheticVQADataset(*args, num_samples=4, seed=7, mode="text", questions_per_image=3)
    return samples + [text[0], text[3]]


def row_length(lengths: list[int]) -> int:
    """The shortest row length at which the samples pack into exactly :data:`ROWS` rows."""
    for max_length in range(max(lengths), sum(lengths) + 1):
        if len(PackingSampler(lengths, max_length)) == ROWS:
            return max_length
    raise AssertionError(f"no row length packs {lengths} into {ROWS} rows")


class MixedSamples(SyntheticVQADataModule):
    """:func:`mixed_samples`, packed into :data:`ROWS` rows (``batch_size`` rows per rank) or in one padded batch."""

    def __init__(self, packed: bool, batch_size: int) -> None:
        super().__init__(train_samples=8, val_samples=4, batch_size=batch_size)
        self.packed = packed

    def train_dataloader(self) -> DataLoader:
        samples = mixed_samples(self)
        collate = VLMCollator(self.tokenizer.pad_token_id, "right", self.image_token_id, self.contract.num_image_tokens)
        if not self.packed:
            return DataLoader(samples, batch_size=self.batch_size, collate_fn=collate)
        lengths = [len(s["input_ids"]) for s in samples]
        return packed_loader(samples, collate, row_length(lengths), self.batch_size, lengths=lengths)


def step_gradients(root: Path, packed: bool, strategy: Any = "auto", devices: int = 1) -> dict[str, torch.Tensor]:
    """Gradients of one SGD step on the 8 samples (whole tensors, by parameter name)."""
    L.seed_everything(0, verbose=False)
    module = SeededModule(model="tiny", optimizer=sgd, warmup_ratio=0.0, activation_checkpointing=True)
    recorder = StepGradients()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
        callbacks=[*placement_callbacks(), recorder],
    )
    batch_size = ROWS // devices if packed else 8
    trainer.fit(module, MixedSamples(packed, batch_size))
    return recorder.steps[0]


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    torch.set_num_threads(1)
    grads = {kind: step_gradients(out.parent / kind, True, _strategy(kind, False), 2) for kind in ("ddp", "fsdp2")}
    if _is_rank_zero():
        torch.save(grads, out)


if __name__ == "__main__":
    main(sys.argv[1:])
