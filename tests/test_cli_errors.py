"""Configuration errors reach the command line as one short paragraph and exit status 2, before any training step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_mm.cli import main

ROOT = Path(__file__).parents[1]
FIT = ["fit", "--model", "MultimodalModule", "--data", "SyntheticVQADataModule", "--data.train_samples", "8"]
QUIET = ["--data.batch_size", "4", "--trainer.max_steps", "1", "--trainer.logger", "false"]
QUIET += ["--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false"]


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lightning-mm: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unknown_zoo_name_from_the_command_line_is_one_short_message():
    """Before: the "did you mean" sat inside a 72-line traceback of jsonargparse and Lightning."""
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_mm.cli", *FIT, "--model.model", "tiy", *QUIET],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) < 10, proc.stderr
    assert "lightning-mm: error: Unknown model 'tiy'. Did you mean 'tiny'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_template_in_model_overrides(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _error(capsys, [*FIT, "--model.model_overrides", '{"template": "chatm"}', *QUIET])
    assert "model_overrides.template: unknown chat template 'chatm'. Did you mean 'chatml'?" in line


def test_misspelt_lora_target_fails_before_the_first_step(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lora = ["--trainer.callbacks+=LoRAComponent", "--trainer.callbacks.component=llm"]
    line = _error(capsys, [*FIT, *QUIET, *lora, "--trainer.callbacks.target_modules=[q_proj, v_poj]"])
    assert "LoRA target 'v_poj' (did you mean 'v_proj'?)" in line


@pytest.mark.parametrize("kind", ["truncated", "empty"])
def test_bad_checkpoint_for_fit_and_export(kind, capsys, tmp_path, monkeypatch):
    """Before: torch's zip error without the file name (truncated), a bare EOFError (empty)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"{kind}.ckpt"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] if kind == "truncated" else b"")
    line = _error(capsys, [*FIT, *QUIET, "--ckpt_path", str(path)])
    assert f"Checkpoint {path} is {kind}" in line
    assert main(["export", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"Checkpoint {path} is {kind}" in err and len(err.splitlines()) < 10 and "Traceback" not in err
