"""Shared fixtures: everything is built offline and small enough for a 2-core CPU."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

# imported once the offline switches above are set
from lightning_mm import MultimodalModule  # noqa: E402
from lightning_mm.cli import main  # noqa: E402
from lightning_mm.data import SyntheticVQADataModule  # noqa: E402


@pytest.fixture()
def tiny_module():
    """A built tiny MultimodalModule (random init, seed 0)."""
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny")
    module.configure_model()
    return module


@pytest.fixture()
def tiny_batch(tiny_module):
    """A collated batch of 4 synthetic VQA samples bound to the tiny module."""
    dm = SyntheticVQADataModule(train_samples=4, val_samples=4, batch_size=4)
    dm.bind(tiny_module.data_contract)
    return next(iter(dm.train_dataloader()))


#: Trainer settings of a run that logs, checkpoints and prints nothing, on the CPU (see :func:`quiet_trainer`).
QUIET_TRAINER = {
    "accelerator": "cpu",
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


@pytest.fixture(scope="session")
def quiet_trainer():
    """Factory: a Lightning Trainer with the :data:`QUIET_TRAINER` settings; keyword arguments add or replace some.

    ``quiet_trainer(max_steps=2, callbacks=[...])``; ``quiet_trainer(logger=CSVLogger(path))`` for a run that logs.
    """

    def make(**overrides) -> L.Trainer:
        return L.Trainer(**{**QUIET_TRAINER, **overrides})

    return make


@pytest.fixture()
def training_steps(monkeypatch) -> list:
    """The modules of the training steps run during the test, in order (MultimodalModule and subclasses).

    For runs whose only result is a return code: the CLI returns 0 once Lightning returns, whatever it trained.
    """
    steps: list = []
    training_step = MultimodalModule.training_step

    @functools.wraps(training_step)
    def recorded(self, *args, **kwargs):
        steps.append(self)
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(MultimodalModule, "training_step", recorded)
    return steps


@pytest.fixture(scope="session")
def vqa_batch() -> dict:
    """One collated training batch (4 samples) of the synthetic task for the ``tiny`` model."""
    module = MultimodalModule(model="tiny")
    dm = SyntheticVQADataModule(train_samples=4, val_samples=4, batch_size=4)
    dm.bind(module.data_contract)
    return next(iter(dm.train_dataloader()))


@pytest.fixture(scope="session")
def build_module():
    """Factory: a built ``tiny`` MultimodalModule with the given placements (``{component: Placement}``)."""

    def build(placements: dict | None = None, seed: int = 0, **kwargs) -> MultimodalModule:
        torch.manual_seed(seed)
        module = MultimodalModule(model=kwargs.pop("model", "tiny"), **kwargs)
        for component, placement in (placements or {}).items():
            module.set_placement(component, placement)
        module.configure_model()
        return module

    return build


#: A shortened quickstart (colour questions only, 60 steps, 64 held-out samples): ``lightning-mm fit`` arguments.
QUICKSTART_SHORT = (
    "--data.init_args.train_samples=1920",
    "--data.init_args.val_samples=64",
    "--data.init_args.question_types=[color]",
    "--data.init_args.train_questions_per_image=1",
    "--trainer.val_check_interval=1.0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """``lightning-mm fit --config recipes/quickstart.yaml`` shortened (see :data:`QUICKSTART_SHORT`), run once.

    Returns a dict: ``args`` (the recipe and overrides, for further commands on the same run), ``root`` (the logger's
    save_dir) and ``ckpt`` (the run's ``last.ckpt``).
    """
    root = tmp_path_factory.mktemp("quickstart")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    args = ["--config", str(recipe), *QUICKSTART_SHORT, f"--trainer.logger.init_args.save_dir={root}"]
    assert main(["fit", *args]) == 0
    ckpt = root / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), f"the quickstart run wrote no {ckpt}"
    return {"args": args, "root": root, "ckpt": ckpt}


#: Environment of a launcher that a child must not inherit (it would join that launcher's process group).
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture(scope="session")
def run_python():
    """Factory: run ``python <args>`` in a fresh process, offline, with this checkout importable; asserts exit 0.

    Call it as ``run_python(*args, cwd=None, stdin=None, timeout=300)``; returns the ``CompletedProcess`` (text
    stdout / stderr).
    """
    repo = Path(__file__).resolve().parents[1]

    def run(*args: str, cwd=None, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_ENV}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, *args]
        proc = subprocess.run(cmd, input=stdin, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        return proc

    return run
