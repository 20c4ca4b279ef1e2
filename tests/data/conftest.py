"""Fixtures of the data tests: the committed LLaVA-format assets, their tokenizer, and dataset factories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lightning_mm.data import LlavaDataset

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
