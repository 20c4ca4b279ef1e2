"""Non-causal attention under FSDP2 on 2 CPU processes: ``python tests/distributed/attention_worker.py OUT``.

Per model (``tiny-gemma3``: the tokens of each image attend to each other whole; ``tiny-paligemma``: prefix LM), two
SGD steps of the placed model (LLM LoRA, full projector, frozen tower) in float64 with activation checkpointing (the
masks are rebuilt in the recomputed forward) on 4 ordered synthetic samples, each rank taking 2. Rank 0 saves, per
model, the global loss and the trainable parameters' whole gradients of each step to OUT. Imported,
:func:`attention_run` runs the same steps in one process on the 4 samples in one batch: the reference.

Lightning's launcher starts rank 1 by running this script again with ``LOCAL_RANK=1``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, DistributedSampler
from worker import (
    Float64Module,
    GlobalLoss,
    StepGradients,
    _is_rank_zero,
    _strategy,
    _trainer,
    placement_callbacks,
    sgd,
)

from lightning_mm.data import SyntheticVQADataModule

MODELS = ("tiny-gemma3", "tiny-paligemma")
SAMPLES = 4  # the global batch of each step: 2 ranks x 2, or 1 process x 4


class OrderedSynthetic(SyntheticVQADataModule):
    """:data:`SAMPLES` synthetic samples in order with the model's collator (``prefix_mask`` for a prefix LM); with
    several ranks, rank r takes samples r, r + world, ..."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(train_samples=SAMPLES, val_samples=2, batch_size=batch_size)

    def train_dataloader(self) -> DataLoader:
        ds = self._dataset(SAMPLES, self.seed)
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collator())


class BatchKeys(Callback):
    """The keys of each training batch this rank saw (``prefix_mask`` is there for a prefix LM)."""

    def __init__(self) -> None:
        self.keys: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.keys.append(sorted(batch))


def attention_run(root: Path, name: str, strategy: Any = "auto", devices: int = 1) -> dict[str, Any]:
    """Two SGD steps of model ``name``: per-step global losses and gradients, the attention pattern, batch keys."""
    L.seed_everything(0, verbose=False)
    module = Float64Module(model=name, optimizer=sgd, warmup_ratio=0.0, activation_checkpointing=True)
    losses, grads, keys = GlobalLoss(), StepGradients(), BatchKeys()
    trainer = _trainer(root, strategy, devices, [*placement_callbacks(), losses, grads, keys], max_steps=2)
    trainer.fit(module, OrderedSynthetic(SAMPLES // devices))
    pattern = module.network.attention_pattern.kind
    return {"losses": losses.losses, "grads": grads.steps, "pattern": pattern, "keys": keys.keys}


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    torch.set_num_threads(1)
    results = {name: attention_run(out.parent / name, name, _strategy("fsdp2", False), 2) for name in MODELS}
    if _is_rank_zero():
        torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1:])
