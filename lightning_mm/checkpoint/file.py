"""A quick look at a checkpoint file before it is loaded: missing, empty and truncated files get a short error."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from lightning_mm.errors import ConfigError

__all__ = ["CheckpointFileError", "check_checkpoint_file"]

_LIGHTNING_NAMES = ("last", "best", "hpc", "registry")


class CheckpointFileError(ConfigError):
    """A checkpoint file that cannot be read: missing, empty, truncated or not a torch checkpoint."""


def _truncated_or_foreign(path: Path, size: int) -> str | None:
    """What is wrong with a file that is not a zip archive (torch's format), or None when torch reads it anyway."""
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # a zip archive whose directory at the end is missing: the writer was cut off
        return f"is truncated ({size:,} bytes, the end of the archive is missing)"
    try:  # torch's legacy (non-zip) format
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - reported, with the file, below
        if isinstance(err, EOFError) or "EOF" in str(err):
            return f"is truncated ({size:,} bytes)"
        if "GLOBAL " in str(err):
            return None  # a whole file the weights-only load refuses: the loader names what it holds
        return f"is not a torch checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
    return None


def check_checkpoint_file(path: Any, name: Any = None) -> None:
    """Raise :class:`CheckpointFileError` naming ``path`` when it cannot be a readable checkpoint.

    Reads only the end of the file (the zip directory torch writes last); a directory (a distributed checkpoint) must
    hold its metadata file. Anything that is not a path (an open file object) is left to the loader.

    Args:
        path: The checkpoint file or folder.
        name: How the error names it (default: ``path``), e.g. the URL a local copy was downloaded from.

    Raises:
        CheckpointFileError: for a missing, empty or truncated file, or one that is not a torch checkpoint.
    """
    if not isinstance(path, (str, os.PathLike)):
        return
    if isinstance(path, str) and (path in _LIGHTNING_NAMES or "://" in path):
        return  # Lightning resolves these itself; remote files are read by fsspec
    p = Path(path)
    shown = p if name is None else name
    if p.is_dir():
        if not (p / ".metadata").is_file():
            raise CheckpointFileError(
                f"Checkpoint {shown} is a directory without the `.metadata` file of a distributed checkpoint: it is "
                "not one, or its writing did not finish."
            )
        return
    if not p.is_file():
        raise CheckpointFileError(f"Checkpoint {shown} does not exist.")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointFileError(
            f"Checkpoint {shown} is empty (0 bytes): the run that wrote it was probably stopped while saving. Use "
            "another checkpoint."
        )
    if zipfile.is_zipfile(p):
        return
    problem = _truncated_or_foreign(p, size)
    if problem is not None:
        raise CheckpointFileError(
            f"Checkpoint {shown} {problem}: it cannot be loaded. A file cut short was being written when its run "
            "stopped; use another checkpoint."
        )
