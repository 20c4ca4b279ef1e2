"""Export folders written whole: into a hidden sibling folder, then renamed into place.

An export is several files (an LLM, a tower, a projector, configs, a processor). Written straight into its folder, a
second export over a first leaves the first one's files that the second does not write (a safetensors export over a
pickled one loads the old tower), and an export killed midway leaves a folder that loads with mixed weights.
:func:`written_whole` writes into ``.<name>.partial-<random>`` beside the target, records what it wrote in a hidden
manifest (:data:`MANIFEST`) and only then moves the folder into place. A target that holds an earlier export is
replaced whole (on Linux in one atomic exchange of the two folders; elsewhere by two renames, between which the
target is briefly absent, never mixed). A target holding anything else is refused before a file is written.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import shutil
import sys
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning_mm.errors import ConfigError

__all__ = ["MANIFEST", "ExportTargetError", "check_export_target", "written_whole"]

#: Hidden file of every export folder: the entries the export wrote (what may be replaced without losing anything).
MANIFEST = ".lightning_mm_export.json"
_PARTIAL, _OLD = "partial", "old"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


class ExportTargetError(ConfigError):
    """An export's output folder that cannot be written: a file, or a folder holding something other than an export."""


def _entries(folder: Path) -> list[str]:
    return sorted(e.name for e in folder.iterdir())


def _export_entries(folder: Path, legacy_entries: Collection[str]) -> set[str] | None:
    """The entries an earlier export in ``folder`` wrote (its manifest's), or None when it holds no export."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            return {*json.loads(manifest.read_text())["entries"], MANIFEST}
        except (ValueError, KeyError, TypeError):
            return None
    found = set(_entries(folder))
    if legacy_entries and found and found <= set(legacy_entries):  # written before exports had a manifest
        return found
    return None


def check_export_target(output_dir: str | os.PathLike, legacy_entries: Collection[str] = ()) -> Path:
    """Raise :class:`ExportTargetError` unless ``output_dir`` can take an export whole.

    It can when it does not exist, is an empty folder, or holds an earlier export and nothing else (the export's
    manifest lists what it wrote; ``legacy_entries``: the names an export of an earlier version, without a manifest,
    may hold).

    Returns:
        ``output_dir`` as a path.
    """
    target = Path(output_dir)
    if target.exists() and not target.is_dir():
        raise ExportTargetError(
            f"Export target {target} is a file, not a folder: give the path of a folder to write (it is created, or "
            "an earlier export in it replaced whole). Nothing was written."
        )
    if not target.is_dir() or not _entries(target):
        return target
    known = _export_entries(target, legacy_entries)
    unrelated = [e for e in _entries(target) if known is None or e not in known]
    if unrelated:
        shown = ", ".join(unrelated[:4]) + (f" and {len(unrelated) - 4} more" if len(unrelated) > 4 else "")
        what = "an earlier export and other files" if known is not None else "files that are not an export"
        raise ExportTargetError(
            f"Export target {target} holds {what} ({shown}): an export replaces its folder whole, so it writes only "
            "into a new or empty folder or one holding an earlier export alone. Nothing was written; give another "
            "folder, or move those files away."
        )
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}"


def _remove_stale(target: Path) -> None:
    """Remove what an earlier export to ``target`` that was killed left beside it."""
    for kind in (_PARTIAL, _OLD):
        for stale in target.parent.glob(f".{glob.escape(target.name)}.{kind}-*"):
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def written_whole(output_dir: str | os.PathLike, legacy_entries: Collection[str] = ()) -> Iterator[Path]:
    """A hidden folder beside ``output_dir`` to write an export into; moved into place when the block ends.

    The target is checked first (:func:`check_export_target`). When the block raises, or the process is killed
    inside it, the target is left as it was (the next export to it removes the hidden folder). Otherwise the written
    entries are listed in :data:`MANIFEST` and the folder replaces the target whole.

    Args:
        output_dir: The export's folder.
        legacy_entries: Names an export of an earlier version (without a manifest) may hold.

    Yields:
        The folder to write into.
    """
    target = check_export_target(output_dir, legacy_entries).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    staging = _sibling(target, _PARTIAL)
    staging.mkdir()
    try:
        yield staging
        (staging / MANIFEST).write_text(json.dumps({"entries": _entries(staging)}, indent=1) + "\n")
        check_export_target(target, legacy_entries)  # nothing else appeared there while writing
        if not target.exists():
            staging.rename(target)
        elif not _exchange(staging, target):  # staging now holds the earlier export, removed below
            old = _sibling(target, _OLD)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
