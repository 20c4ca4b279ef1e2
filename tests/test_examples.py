"""The documented subclass example trains, so the module's seams stay real."""

import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.subclass import NormedProjector, NormedProjectorModule  # noqa: E402
from lightning_mm.cli import main
from lightning_mm.data import SyntheticVQADataModule  # noqa: E402


def test_subclass_with_custom_projector_and_auxiliary_loss_trains(quiet_trainer):
    L.seed_everything(0)
    module = NormedProjectorModule(feature_penalty=1e-3, model="tiny")
    dm = SyntheticVQADataModule(train_samples=32, val_samples=16, batch_size=8)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    assert isinstance(module.network.projector, NormedProjector)
    assert "train/feature_penalty" in trainer.callback_metrics
    assert torch.isfinite(trainer.callback_metrics["train/feature_penalty"])
    # the new projector's own parameters were trained
    norm_w = module.network.projector.norm.weight
    assert not torch.allclose(norm_w, torch.ones_like(norm_w))


def test_subclass_from_the_cli(tmp_path, monkeypatch, training_steps):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    rc = main(
        [
            "fit",
            "--config",
            "recipes/quickstart.yaml",
            "--model.class_path",
            "examples.subclass.NormedProjectorModule",
            "--model.init_args.feature_penalty",
            "0.01",
            "--trainer.fast_dev_run=1",
            "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",  # the recipe's monitors need a logger
            "--data.init_args.train_samples=16",
            "--data.init_args.val_samples=8",
        ]
    )
    assert rc == 0
    assert len(training_steps) == 1 and type(training_steps[0]) is NormedProjectorModule  # fast_dev_run=1
