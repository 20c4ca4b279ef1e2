"""``trainer.predict`` of the tiny model with a :class:`PredictionWriter`, run as a script on N CPU processes.

``python tests/callbacks/predict_worker.py OUT.jsonl DEVICES``: with DEVICES > 1 Lightning's DDP launcher starts the
other ranks (gloo); every rank builds the same random-init model from seed 0.
"""

from __future__ import annotations

import sys

import lightning as L
import torch

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import PredictionWriter
from lightning_mm.data import SyntheticVQADataModule

NUM_SAMPLES = 11  # odd: the ranks get different numbers of samples and batches


def predict(output_path: str, devices: int) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    module = MultimodalModule(model="tiny", max_new_tokens=3)
    data = SyntheticVQADataModule(predict_samples=NUM_SAMPLES, batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        callbacks=[PredictionWriter(output_path=output_path, print_rows=0)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(module, data, return_predictions=False)


if __name__ == "__main__":
    predict(sys.argv[1], int(sys.argv[2]))
