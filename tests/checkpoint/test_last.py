"""``--ckpt_path last`` finds the interrupted run's ``last.ckpt`` in the logger's earlier version folder."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from lightning_mm.cli import main

ASSET = Path(__file__).resolve().parents[1] / "assets" / "faults_tiny.yaml"


def _recipe(tmp_path: Path) -> Path:
    """The faults test recipe as most recipes are written: a versioned logger, a ModelCheckpoint without dirpath."""
    config = yaml.safe_load(ASSET.read_text())
    config["trainer"]["logger"]["init_args"] = {"save_dir": "logs", "name": "tiny"}
    config["trainer"]["callbacks"][0]["init_args"].pop("dirpath")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_ckpt_path_last_resumes_from_the_previous_version(tmp_path, monkeypatch, training_steps):
    """Before: Lightning looked in the new run's version_1/checkpoints only, found nothing and trained from step 0."""
    monkeypatch.chdir(tmp_path)
    recipe = str(_recipe(tmp_path))
    assert main(["fit", "--config", recipe, "--trainer.max_steps", "2"]) == 0
    first = tmp_path / "logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(first, weights_only=True)["global_step"] == 2
    training_steps.clear()
    assert main(["fit", "--config", recipe, "--trainer.max_steps", "4", "--ckpt_path", "last"]) == 0
    assert len(training_steps) == 2 * 2  # two optimiser steps of two micro-batches each: it resumed at step 2
    second = tmp_path / "logs" / "tiny" / "version_1" / "checkpoints" / "last.ckpt"
    assert torch.load(second, weights_only=True)["global_step"] == 4
