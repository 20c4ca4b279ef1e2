"""Checkpoint files are looked at before loading: a missing, empty or truncated one is a short error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_mm import MultimodalModule
from lightning_mm.checkpoint.file import CheckpointFileError, check_checkpoint_file


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    """A whole checkpoint-like file, the same file cut in half (a write killed midway) and an empty one."""
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.randn(256, 256)}, "epoch": 1}, whole)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    return {"whole": whole, "truncated": truncated, "empty": empty, "missing": tmp_path / "missing.ckpt"}


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("truncated", r"is truncated \([\d,]+ bytes, the end of the archive is missing\)"),
        ("empty", r"is empty \(0 bytes\)"),
        ("missing", "does not exist"),
    ],
)
def test_bad_files_are_named_with_what_is_wrong(files, kind, what):
    path = files[kind]
    with pytest.raises(CheckpointFileError, match=f"Checkpoint {path} {what}") as info:
        check_checkpoint_file(path)
    assert "\n" not in str(info.value)


def test_good_files_and_what_lightning_resolves_pass(files, tmp_path):
    check_checkpoint_file(files["whole"])
    check_checkpoint_file(str(files["whole"]))
    for name in ("last", "best", "s3://bucket/run.ckpt"):
        check_checkpoint_file(name)
    dcp = tmp_path / "sharded"
    dcp.mkdir()
    with pytest.raises(CheckpointFileError, match="without the `.metadata` file"):
        check_checkpoint_file(dcp)
    (dcp / ".metadata").write_bytes(b"x")
    check_checkpoint_file(dcp)


def test_a_non_torch_file_is_named(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointFileError, match=f"Checkpoint {path} is not a torch checkpoint"):
        check_checkpoint_file(path)


@pytest.mark.parametrize("kind", ["truncated", "empty"])
def test_load_from_checkpoint_names_the_file(files, kind):
    """Before: torch's zip error without the file name, or a bare EOFError."""
    with pytest.raises(ValueError, match=f"Checkpoint {files[kind]} is (truncated|empty)"):
        MultimodalModule.load_from_checkpoint(files[kind])
