"""Shared fixtures of the checkpoint / export tests: short deterministic fits."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule


class OrderedVQA(SyntheticVQADataModule):
    """The synthetic task without shuffling: the same batches in the same order in every run."""

    def train_dataloader(self):
        return self._loader(self._dataset(self.train_samples, self.seed), shuffle=False)


class LossRecorder(Callback):
    """Records the loss returned by every training step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="session")
def fit_tiny(quiet_trainer):
    """Factory: fit a fresh ``tiny`` module on 16 unshuffled samples (2 steps per epoch), deterministically.

    Returns (module, trainer, recorded losses).
    """

    def fit(
        root,
        callbacks: list,
        max_epochs: int = 1,
        ckpt_path: str | None = None,
        seed: int = 0,
        extra_callbacks: list | None = None,
        **module_kwargs,
    ):
        L.seed_everything(seed, verbose=False)
        module = MultimodalModule(model="tiny", warmup_ratio=0.0, **module_kwargs)
        recorder = LossRecorder()
        trainer = quiet_trainer(
            max_epochs=max_epochs,
            limit_val_batches=0,
            deterministic=True,
            default_root_dir=root,
            callbacks=[*callbacks, recorder, *(extra_callbacks or [])],
        )
        try:
            trainer.fit(module, OrderedVQA(train_samples=16, val_samples=8, batch_size=8), ckpt_path=ckpt_path)
        finally:
            torch.use_deterministic_algorithms(False)
        return module, trainer, recorder.losses

    return fit
