"""``BestAndLastCheckpoint``: ``last.ckpt`` holds the state after the last step even when the final validation is not
the best one, and ``validate`` on it reproduces the final metrics of ``fit``."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import BestAndLastCheckpoint
from lightning_mm.data import SyntheticVQADataModule


@pytest.mark.parametrize("save_last", [True, "link"])
def test_last_checkpoint_is_the_final_step_and_validates_to_the_final_metrics(quiet_trainer, tmp_path, save_last):
    L.seed_everything(0, verbose=False)
    # monitored with mode=max on the loss, the best checkpoint is the first validation's (the loss falls), so
    # Lightning's ModelCheckpoint would leave last.ckpt at step 2 of 4
    checkpoint = BestAndLastCheckpoint(dirpath=tmp_path, monitor="val/loss", mode="max", save_last=save_last)
    module = MultimodalModule(model="tiny", warmup_ratio=0.0)
    data = SyntheticVQADataModule(train_samples=16, val_samples=8, batch_size=4, question_types=["color"])
    trainer = quiet_trainer(
        max_steps=4, val_check_interval=2, num_sanity_val_steps=0, enable_checkpointing=True, callbacks=[checkpoint]
    )
    trainer.fit(module, data)
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    last = tmp_path / "last.ckpt"
    assert not last.is_symlink()  # a link would point at the best (step 2) file
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
    assert torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["global_step"] == 2
    assert trainer._checkpoint_connector._parse_ckpt_path(TrainerFn.VALIDATING, "last", True, True) == str(last)

    (metrics,) = quiet_trainer().validate(MultimodalModule(model="tiny"), data, ckpt_path=last, verbose=False)
    assert set(final) <= set(metrics)
    assert {k: metrics[k] for k in final} == pytest.approx(final, abs=1e-6)
