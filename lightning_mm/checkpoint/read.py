"""Reading checkpoints weights-only, from a local file or a URL, with one short error for a file that cannot be read.

A checkpoint is a pickle: unpickled without restriction, it can run any code it names. Every checkpoint the project
reads (``MultimodalModule.load_from_checkpoint``, ``fit/validate/test/predict --ckpt_path``, a resumed run,
``lightning-mm chat`` and ``export``) is loaded with ``weights_only=True``: tensors, containers and plain values only.
A file that needs more is refused with :class:`UnsafeCheckpointError`, which names it and what it holds; an
unreadable one (cut short, not a torch file, a failed download) with
:class:`~lightning_mm.checkpoint.file.CheckpointFileError`.

An ``http(s)://`` checkpoint is downloaded into a temporary folder (removed afterwards) and read like a local file:
nothing is cached under a name that another URL could share.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import torch
from lightning.fabric.utilities.cloud_io import _load as lightning_load

from lightning_mm.checkpoint.file import CheckpointFileError, check_checkpoint_file

__all__ = [
    "UnsafeCheckpointError",
    "checkpoint_errors",
    "is_url",
    "local_checkpoint",
    "read_checkpoint",
    "refuse_unsafe_loading",
]

_URL_SCHEMES = ("http", "https")
# what torch's weights-only unpickler names when it refuses ("... unsupported GLOBAL posix.system ...")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class UnsafeCheckpointError(CheckpointFileError):
    """A checkpoint that holds objects only arbitrary code could build: refused, never unpickled."""


def is_url(path: Any) -> bool:
    """Whether ``path`` is an ``http://`` or ``https://`` address."""
    return isinstance(path, str) and urlparse(path).scheme in _URL_SCHEMES


def refuse_unsafe_loading(weights_only: bool | None, where: str) -> None:
    """Raise unless ``weights_only`` is None or True: the project never loads a checkpoint with arbitrary unpickling.

    Args:
        weights_only: The value a caller asked for.
        where: The argument's name in the caller's terms (``load_from_checkpoint(weights_only=...)``).
    """
    if weights_only is False:
        raise UnsafeCheckpointError(
            f"{where}=False is not supported: lightning_mm loads every checkpoint weights-only (tensors and plain "
            "data), so that a checkpoint cannot run code. Register a trusted class of your own with "
            "torch.serialization.add_safe_globals instead."
        )


def _refused(name: Any, err: BaseException) -> UnsafeCheckpointError:
    found = _GLOBAL.search(str(err))
    what = f"a Python object ({found.group(1)})" if found else "a Python object"
    return UnsafeCheckpointError(
        f"Checkpoint {name} was refused: it holds {what} that only unrestricted unpickling could build, which could "
        "run any code. lightning_mm loads checkpoints weights-only (tensors and plain data), and the checkpoints it "
        "writes hold nothing else: this file was written by other code or altered. It was not loaded."
    )


def _unreadable(name: Any, err: BaseException) -> CheckpointFileError:
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return CheckpointFileError(
        f"Checkpoint {name} cannot be read ({type(err).__name__}{': ' + detail if detail else ''}): it is not a "
        "whole torch checkpoint. Use another checkpoint."
    )


@contextmanager
def checkpoint_errors(name: Any) -> Iterator[None]:
    """Turn what torch raises while unpickling checkpoint ``name`` into one-paragraph errors naming it.

    A weights-only refusal becomes :class:`UnsafeCheckpointError`; a file that is not a whole torch archive
    (``PytorchStreamReader`` errors, an unexpected end of file) a :class:`CheckpointFileError`. Anything else passes.
    """
    try:
        yield
    except CheckpointFileError:
        raise
    except pickle.UnpicklingError as err:
        if _GLOBAL.search(str(err)):
            raise _refused(name, err) from None
        raise _unreadable(name, err) from None
    except (EOFError, RuntimeError) as err:
        if isinstance(err, EOFError) or "PytorchStreamReader" in str(err) or "zip archive" in str(err):
            raise _unreadable(name, err) from None
        raise


@contextmanager
def local_checkpoint(path: Any) -> Iterator[Any]:
    """A local path for checkpoint ``path``: the path itself, or an ``http(s)://`` file downloaded for the block.

    The download goes into a temporary folder, removed when the block ends; a failed download is a
    :class:`CheckpointFileError` naming the URL. Other paths (local files, folders, ``s3://`` and other fsspec
    addresses, open file objects) are yielded as they are.
    """
    if not is_url(path):
        yield path
        return
    name = os.path.basename(urlparse(path).path) or "checkpoint.ckpt"
    with tempfile.TemporaryDirectory(prefix="lightning_mm-download-") as folder:
        local = os.path.join(folder, name)
        try:
            torch.hub.download_url_to_file(path, local, progress=False)
        except (OSError, ValueError) as err:  # URLError / HTTPError are OSErrors
            raise CheckpointFileError(f"Checkpoint {path} could not be downloaded: {err}.") from None
        yield local


def read_checkpoint(
    path: str | os.PathLike | IO, map_location: Any = "cpu", name: Any = None, mmap: bool = False
) -> dict[str, Any]:
    """A checkpoint's contents, loaded weights-only, from a local file, a URL or any fsspec address.

    Args:
        path: The checkpoint: a file, an ``http(s)://`` URL (downloaded, then read), another fsspec address, or an
            open binary file.
        map_location: Where tensors go (``torch.load``'s argument).
        name: How errors name the checkpoint (default: ``path``), e.g. the URL a local copy was downloaded from.
        mmap: Map a local file instead of reading it (``torch.load(mmap=True)``).

    Raises:
        UnsafeCheckpointError: the file holds objects a weights-only load refuses; nothing of it ran.
        CheckpointFileError: a missing, empty, truncated or foreign file, or a failed download.
    """
    name = path if name is None else name
    with local_checkpoint(path) as local:
        check_checkpoint_file(local, name=name)
        with checkpoint_errors(name):
            if isinstance(local, str | Path) and "://" not in str(local):
                mmap = mmap and zipfile.is_zipfile(local)  # torch maps only its zip format
                return torch.load(local, map_location=map_location, weights_only=True, mmap=mmap)
            return lightning_load(local, map_location=map_location, weights_only=True)
