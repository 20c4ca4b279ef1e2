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
    assert len(lines) == 1 and "Traceback" not in err and len(err.splitlines()) <= 5, err
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


# ---------------------------------------------------------------- parsing mistakes: one paragraph, exit status 2
# Before: jsonargparse's usage (50-67 lines) and its union errors, without a close match; a duplicated YAML key passed
# silently; two placements for one component, LoRA r 0, a negative lr and batch_size 0 were tracebacks (exit 1).
RECIPE = str(ROOT / "recipes" / "quickstart.yaml")


def _paragraph(capsys, argv: list[str]) -> str:
    """The one error line of a failing command; stderr holds at most 5 lines in all and no traceback."""
    line = _error(capsys, argv)
    return line.removeprefix("lightning-mm: error: ")


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "extra.yaml"
    path.write_text(text)
    return str(path)


def test_misspelt_recipe_path(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    line = _paragraph(capsys, ["fit", "--config", "recipes/quickstrat.yaml"])
    assert line == "--config: file recipes/quickstrat.yaml does not exist. Did you mean recipes/quickstart.yaml?"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--model.init_args.modle", "tiny"],
            [
                "model.init_args.modle: MultimodalModule has no argument 'modle'. Did you mean 'model'?",
                "model_overrides",
            ],
        ),
        (["--trainer.max_steps", "abc"], ["trainer.max_steps: expected an integer, got 'abc'."]),
        (
            ["--model.init_args.optimizer.init_args.lrr", "0.1"],
            ["model.init_args.optimizer.init_args.lrr: AdamW has no argument 'lrr'. Did you mean 'lr'?"],
        ),
        (["--data", "SyntheticVQA"], ["data: no class 'SyntheticVQA'", "Did you mean 'SyntheticVQADataModule'?"]),
        (["--data.init_args.batch_size", "0"], ["batch_size must be >= 1, got 0."]),
        (["--model.init_args.schedule", "cosin"], ["schedule: 'cosin' is not accepted. Did you mean 'cosine'?"]),
    ],
    ids=["unknown-argument", "wrong-type", "optimizer-argument", "unknown-class", "batch-size-0", "schedule"],
)
def test_command_line_mistakes(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _paragraph(capsys, ["fit", "--config", RECIPE, *args])
    assert all(part in line for part in expected), line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "trainer:\n  callbacks:\n    - class_path: lightning_mm.callbacks.LoRAComponent\n"
            "      init_args: {component: vison}\n",
            "trainer.callbacks (LoRAComponent).component: 'vison' is not accepted. Did you mean 'vision'? "
            "Accepted: 'vision', 'projector', 'llm'.",
        ),
        (
            "trainer:\n  max_stepss: 3\n",
            "trainer.max_stepss: fit has no such option. Did you mean 'trainer.max_steps'?",
        ),
        (
            "trainer:\n  max_steps: 1\n  logger: false\n  max_steps: 2\n",
            "extra.yaml, line 4: key 'max_steps' is written twice in the same mapping (first at line 2)",
        ),
        ("trainer:\n  max_steps: [1\n", "extra.yaml, line 3, column 1: not valid YAML: did not find expected ','"),
        (
            "model:\n  init_args:\n    optimizer:\n      class_path: torch.optim.AdamW\n      init_args: {lr: -0.1}\n",
            "optimizer lr must be >= 0, got -0.1.",
        ),
    ],
    ids=["literal", "unknown-key", "duplicated-key", "not-yaml", "negative-lr"],
)
def test_config_file_mistakes(text, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _paragraph(capsys, ["fit", "--config", RECIPE, "--config", _yaml(tmp_path, text)])
    assert expected in line, line


@pytest.mark.parametrize(
    ("callbacks", "expected"),
    [
        (
            "    - {class_path: lightning_mm.callbacks.LoRAComponent, init_args: {component: llm}}\n"
            "    - {class_path: lightning_mm.callbacks.FullComponent, init_args: {component: llm}}\n",
            "trainer.callbacks[0] (LoRAComponent) and trainer.callbacks[1] (FullComponent) both place the llm",
        ),
        ("    - {class_path: lightning_mm.callbacks.LoRAComponent, init_args: {component: llm, r: 0}}\n", "`r` must"),
    ],
    ids=["two-placements", "lora-r-0"],
)
def test_placement_mistakes_fail_before_anything_is_built(callbacks, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _paragraph(capsys, [*FIT, *QUIET, "--config", _yaml(tmp_path, f"trainer:\n  callbacks:\n{callbacks}")])
    assert expected in line, line


def test_subcommand_mistakes_answer_without_lightning(capsys):
    assert "Did you mean 'zoo'? Subcommands: fit, validate, test, predict, chat, export, zoo." in _paragraph(
        capsys, ["zooo"]
    )
    assert "a subcommand is required" in _paragraph(capsys, [])
