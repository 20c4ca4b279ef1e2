"""Exports are written whole: an earlier export is replaced whole, never mixed, and a bad target is a short error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lightning_mm
from lightning_mm.cli import main
from lightning_mm.interop import parts
from lightning_mm.interop.output_dir import MANIFEST, ExportTargetError
from lightning_mm.interop.parts import export_model, load_exported


def _module(seed: int):
    torch.manual_seed(seed)
    return lightning_mm.create_model("tiny-llava")


@pytest.fixture(scope="module")
def modules():
    """Two tiny models with different weights."""
    return _module(0), _module(1)


def _files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _same_weights(network, module) -> bool:
    ours, theirs = network.state_dict(), module.network.state_dict()
    return all(torch.equal(v, theirs[k]) for k, v in ours.items() if k in theirs)


def test_a_parts_export_over_another_leaves_none_of_its_files(modules, tmp_path):
    """Before: the second export wrote over the first, and the first's other files stayed: after a safetensors
    export, a pickled re-export still loaded the safetensors tower of the first model."""
    first, second = modules
    out = tmp_path / "out"
    tower = out / "vision"
    export_model(first, out, safe_serialization=False)  # --pickle: the timm tower as pytorch_model.bin
    assert (tower / "pytorch_model.bin").is_file() and not (tower / "model.safetensors").exists()
    export_model(second, out)
    assert not list(out.rglob("*.bin")) and _same_weights(load_exported(out), second)
    export_model(first, out, safe_serialization=False)
    assert not (tower / "model.safetensors").exists()
    assert _same_weights(load_exported(out), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden folder left beside it


def test_an_export_that_fails_midway_leaves_the_earlier_export_whole(modules, tmp_path, monkeypatch):
    """Before: the new LLM was already written over the earlier export's, beside its old tower and projector."""
    first, second = modules
    out = tmp_path / "out"
    export_model(first, out)
    before = _files(out)

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt  # the LLM is written; the process stops before the tower

    monkeypatch.setattr(parts, "save_for_hf", cut_short)
    with pytest.raises(KeyboardInterrupt):
        export_model(second, out)
    assert _files(out) == before
    assert _same_weights(load_exported(out), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_hf_export_replaces_a_parts_export_whole_and_fails_without_touching_one(modules, tmp_path, monkeypatch):
    first, second = modules
    out = tmp_path / "out"
    export_model(first, out)
    lightning_mm.export_hf(second, out)
    assert not (out / parts.SPEC_FILE).exists() and (out / "config.json").is_file() and (out / MANIFEST).is_file()
    before = _files(out)
    family = lightning_mm.families.get_family(first.spec.family)

    def processor_fails(*args, **kwargs):
        raise RuntimeError("stopped while writing the processor")

    monkeypatch.setattr(type(family), "hf_processor", processor_fails)
    with pytest.raises(RuntimeError, match="stopped while writing"):
        lightning_mm.export_hf(first, out)
    assert _files(out) == before  # the second model's weights, whole
    weights = load_file(out / "model.safetensors")
    projector = next(v for k, v in weights.items() if k.endswith("multi_modal_projector.linear_1.weight"))
    assert torch.equal(projector, second.network.projector.state_dict()["0.weight"])


def test_a_target_that_is_a_file_or_holds_other_files_is_refused(modules, tmp_path, capsys):
    first, _ = modules
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    with pytest.raises(ExportTargetError, match=f"Export target {target} is a file, not a folder"):
        export_model(first, target)
    # the command checks the target before it loads the checkpoint
    assert main(["export", str(tmp_path / "any.ckpt"), str(target)]) == 2
    err = capsys.readouterr().err
    assert f"lightning-mm export: error: Export target {target} is a file" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    with pytest.raises(ExportTargetError, match=r"holds files that are not an export \(notes.txt\)"):
        lightning_mm.export_hf(first, folder)
    export_model(first, tmp_path / "export")
    (tmp_path / "export" / "notes.txt").write_text("mine\n")
    with pytest.raises(ExportTargetError, match=r"holds an earlier export and other files \(notes.txt\)"):
        export_model(first, tmp_path / "export")
    assert (folder / "notes.txt").read_text() == (tmp_path / "export" / "notes.txt").read_text() == "mine\n"
    assert target.read_text() == "mine\n"
