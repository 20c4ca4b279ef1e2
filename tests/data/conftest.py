"""Fixtures of the data tests: the committed LLaVA-format assets, their tokenizer, dataset factories, a run launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lightning_mm.data import LlavaDataset

ROOT = Path(__file__).resolve().parents[2]
RESUME_WORKER = Path(__file__).with_name("resume_worker.py")
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "PL_GLOBAL_SEED")
ASSETS = Path(__file__).resolve().parents[1] / "assets"
LLAVA_DIR = ASSETS / "llava"
TOKENIZER_DIR = ASSETS / "tokenizer"
# A tower config as timm resolves it (mean/std differ per channel so that padding colours are checkable).
IMAGE_CONFIG = {
    "input_size": (3, 32, 32),
    "interpolation": "bicubic",
    "mean": (0.2, 0.4, 0.6),
    "std": (0.5, 0.25, 0.2),
    "crop_pct": 0.9,
    "crop_mode": "center",
}


@pytest.fixture(scope="session")
def tokenizer():
    """The asset tokenizer (byte-level BPE, bos <s>, eos </s>, pad <pad>, chat template with generation blocks)."""
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def records() -> list[dict]:
    """The asset records, read with plain json (independent of the code under test)."""
    return json.loads((LLAVA_DIR / "llava_tiny.json").read_text())


@pytest.fixture
def make_dataset(tokenizer):
    """Factory: ``make_dataset(path or [paths], template=..., **overrides)`` with the asset defaults."""

    def make(path=LLAVA_DIR / "llava_tiny.json", template="vicuna_v1", **kwargs) -> LlavaDataset:
        kwargs.setdefault("num_image_tokens", 4)
        kwargs.setdefault("image_data_config", IMAGE_CONFIG)
        kwargs.setdefault("image_folder", str(LLAVA_DIR))
        folder = kwargs.pop("image_folder")
        path = [str(p) for p in path] if isinstance(path, list) else str(path)
        return LlavaDataset(path, folder, kwargs.pop("tok", tokenizer), template, **kwargs)

    return make


@pytest.fixture
def write_jsonl(tmp_path):
    """Factory: write records (dicts, or raw strings written as is) to a .jsonl file; returns its path."""

    def write(rows, name="data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        return path

    return write


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _launch(
    *args: str, killed: bool = False, timeout: float = 240, script: Path = RESUME_WORKER, out_dir: str | None = None
) -> None:
    """Run the worker ``script`` in its own session; when its main process ends, end whatever is left of the session
    (the data workers of a killed run can outlive it). Output goes to a file in ``out_dir`` (None: the second argument,
    the output folder of ``resume_worker.py``): an orphaned worker keeps a pipe open."""
    out = Path(out_dir or args[1]) / f"log-{'killed' if killed else 'run'}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=ROOT,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    expected = -signal.SIGKILL if killed else 0
    assert proc.returncode == expected, f"worker {' '.join(args)}: exit {proc.returncode}\n{out.read_text()[-5000:]}"


@pytest.fixture(scope="session")
def launch_worker():
    """``launch_worker(*args, killed=False, script=..., out_dir=...)``: run ``tests/data/resume_worker.py ARGS`` (or
    ``script``) in a fresh session (asserts its exit: 0, or SIGKILL when ``killed``)."""
    return _launch
