"""Fixtures of the distributed tests: the worker script, run in 2 processes or imported for single-process runs."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).parents[2]
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "PL_GLOBAL_SEED")


def run_script(script: Path, *args: str, timeout: float = 300) -> None:
    """``python SCRIPT ARGS`` in a fresh process (Lightning launches the second rank).

    Both ranks run in their own process group: past ``timeout`` seconds (a rank waiting in a collective the other
    never joins) the whole group is killed and the test fails, instead of leaving the second rank behind.
    """
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{script.name} {' '.join(args)} did not finish in {timeout:.0f} s (hung):\n{stderr[-6000:]}")
    assert proc.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"


def _run_worker(*args: str, timeout: float = 300) -> None:
    run_script(WORKER, *args, timeout=timeout)


def import_script(script: Path, name: str):
    """A worker script as a module (it may import the shared helpers of ``worker.py`` beside it)."""
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(script.parent))
    return module


@pytest.fixture(scope="session")
def launch():
    """``launch(*args)``: run the worker script with ARGS on 2 CPU processes (asserts it succeeded)."""
    return _run_worker


@pytest.fixture(scope="session")
def worker():
    """The worker script as a module (its single-process runs happen in this process)."""
    spec = importlib.util.spec_from_file_location("lightning_mm_distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def single_process_run(worker, tmp_path_factory):
    """The placed tiny model trained in one process, batch 8 (the global batch of the 2 x 4 runs), validating.

    Returns (per-step losses, trained parameters by name, evaluation: validation metrics and predictions, optimiser
    groups and placement table).
    """
    root = tmp_path_factory.mktemp("single-process")
    module, trainer, losses = worker.fit_placed(root, "auto", 1, 8, validate=True)
    trained = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    layout = worker.optimizer_layout(trainer)
    return losses, trained, {**worker.evaluate(trainer, module, 4), **layout}
