"""``hf:`` model names: local directories recorded absolute, unreachable checkpoints named."""

from __future__ import annotations

import huggingface_hub
import pytest

import lightning_mm
from lightning_mm.zoo.hf import absolute_hf_name
from tests.interop.conftest import make_hf_llava, save_checkpoint


def test_a_relative_directory_is_recorded_absolute(tmp_path, monkeypatch):
    save_checkpoint(make_hf_llava("clip-llama"), tmp_path / "ck")
    monkeypatch.chdir(tmp_path)
    module = lightning_mm.MultimodalModule(model="hf:ck")
    # what a checkpoint records: an adapter-only one rebuilds its base from it, from any working directory
    assert module.hparams["model"] == f"hf:{tmp_path.resolve() / 'ck'}"
    assert absolute_hf_name("hf:llava-hf/llava-1.5-7b-hf") == "hf:llava-hf/llava-1.5-7b-hf"  # hub ids as written
    assert absolute_hf_name("tiny") == "tiny"


def test_a_name_that_is_neither_a_directory_nor_reachable_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"Checkpoint 'ck2' is not a local directory and could not be fetched"):
        lightning_mm.create_model("hf:ck2")
