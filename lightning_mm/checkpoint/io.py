"""Checkpoint files that are whole or absent: written beside their target, synced, then renamed over it.

Lightning's ``TorchCheckpointIO`` serialises a checkpoint into memory, writes it to a file in the system temp folder
and moves that file to the target. When the temp folder is on another filesystem than the checkpoints (a tmpfs
``/tmp``, node-local scratch with checkpoints on shared storage), the move is a copy into the target itself: a process
killed during the copy leaves a truncated ``last.ckpt`` that no run can resume from. :class:`AtomicCheckpointIO`
writes into a hidden file in the target's own folder, syncs it to disk and renames it over the target (atomic on a
POSIX filesystem), so the target is always either the previous checkpoint or the new one. It also reads checkpoints
weights-only, local files and URLs alike (:func:`~lightning_mm.checkpoint.read.read_checkpoint`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_mm.checkpoint.read import read_checkpoint, refuse_unsafe_loading

__all__ = ["AtomicCheckpointIO", "use_atomic_checkpoint_io"]

log = logging.getLogger(__name__)


def _partial_path(path: str) -> str:
    """The hidden file a checkpoint is written to before it is renamed to ``path``."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.partial")


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local files are replaced atomically, and whose checkpoints load weights-only.

    Saving: the checkpoint is written to ``.<name>.partial`` in the target's folder, flushed and synced, then renamed
    over the target and the folder synced (remote paths are left to Lightning). A process killed while writing leaves
    the previous checkpoint in place and at most a stale ``.partial`` file, which the next save of that name replaces.

    Loading (``fit/validate/predict(ckpt_path=...)``, a resumed run): always weights-only, for a local file and an
    ``http(s)://`` URL alike (Lightning itself unpickles URLs without restriction); a refused or unreadable file is a
    one-paragraph :class:`~lightning_mm.checkpoint.file.CheckpointFileError` naming it.
    """

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        refuse_unsafe_loading(weights_only, "weights_only")
        return read_checkpoint(path, map_location=map_location)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        fs = get_filesystem(path)
        if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint does not take storage_options.")
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        partial = _partial_path(os.path.abspath(path))
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise
        _fsync_folder(folder)


def use_atomic_checkpoint_io(trainer: L.Trainer) -> None:
    """Make ``trainer`` write and read checkpoint files with :class:`AtomicCheckpointIO`.

    Only a strategy on Lightning's plain ``TorchCheckpointIO`` is changed; a checkpoint IO the user configured (a
    subclass, asynchronous or remote IO) and sharded checkpoints (folders) are left as they are.
    """
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
        log.debug("Checkpoint files are written atomically (%s)", AtomicCheckpointIO.__name__)
