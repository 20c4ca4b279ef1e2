"""``--ckpt_path last`` across runs: the newest ``last*.ckpt`` of this run's checkpoint folders or of its logger's
earlier versions.

Lightning resolves ``ckpt_path="last"`` in the checkpoint folders of the run being started. A ``ModelCheckpoint``
without ``dirpath`` (most recipes) writes into the logger's folder of the run, and a new run gets a new version
(``runs/quickstart/version_1/``): the interrupted run's ``last.ckpt`` sits in ``version_0`` and Lightning, finding
nothing, starts from scratch with only a warning. :func:`find_last_checkpoint` looks there too.
"""

from __future__ import annotations

import glob
import os
from typing import Any

__all__ = ["find_last_checkpoint"]


def _candidates(folder: str) -> list[str]:
    return glob.glob(os.path.join(glob.escape(folder), "last*.ckpt"))


def find_last_checkpoint(trainer: Any) -> str | None:
    """The newest ``last*.ckpt`` (by modification time) for ``trainer``: in the ``dirpath`` of its checkpoint callbacks,
    and in ``<version>/checkpoints/`` of every version of its loggers (``<save_dir>/<name>/version_*``, any version
    name). None when there is none.

    Args:
        trainer: A Lightning ``Trainer`` (its ``checkpoint_callbacks`` and ``loggers`` are read; nothing is written).
    """
    found: list[str] = []
    for callback in getattr(trainer, "checkpoint_callbacks", []):
        dirpath = getattr(callback, "dirpath", None)
        if dirpath:
            found += _candidates(str(dirpath))
    for logger in getattr(trainer, "loggers", []):
        root = getattr(logger, "root_dir", None)  # <save_dir>/<name>: one folder per version below it
        if root and os.path.isdir(root):
            for version in os.listdir(root):
                found += _candidates(os.path.join(root, version, "checkpoints"))
    return max(found, key=os.path.getmtime) if found else None
