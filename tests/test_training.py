"""Short end-to-end runs that still show learning (the full quickstart lives in benchmarks/quickstart.py)."""

import lightning as L
import pytest
import torch

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule


def _fit(quiet_trainer, blind: bool, steps: int = 150):
    L.seed_everything(0)
    module = MultimodalModule(model="tiny", optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.0))
    dm = SyntheticVQADataModule(
        train_samples=32 * steps, val_samples=96, batch_size=32, question_types=["color"], blind_images=blind
    )
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    return trainer.validate(module, dm, verbose=False)[0], module, dm


@pytest.mark.slow
def test_learns_to_read_colour_and_blind_control_cannot(quiet_trainer):
    seen, module, dm = _fit(quiet_trainer, blind=False)
    blind, _, _ = _fit(quiet_trainer, blind=True)
    assert seen["val/answer_accuracy"] >= 0.9, seen
    assert blind["val/answer_accuracy"] <= 0.4, blind  # 6 colours: chance is 1/6
    assert seen["val/loss"] < blind["val/loss"]
    # greedy generation agrees with the teacher-forced exact match
    trainer = quiet_trainer()
    dm.predict_samples = 32
    preds = [p for batch in trainer.predict(module, dm) for p in batch]
    assert len(preds) == 32
    acc = sum(p["prediction"] == p["answer"] for p in preds) / len(preds)
    assert acc >= 0.85, preds[:4]
