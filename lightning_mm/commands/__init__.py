"""Subcommands of ``lightning-mm``: the Trainer ones (``fit``, ``validate``, ``test``, ``predict``:
:mod:`~lightning_mm.commands.trainer`) and the project's own (``chat``, ``export``, ``zoo``), each module registering
itself with :func:`register_command`.

Nothing heavy is imported here: a subcommand's module (and torch, transformers or Lightning with it) loads when it
runs, so that ``lightning-mm --help`` and ``lightning-mm zoo`` start in well under a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_mm.commands.registry import BUILTIN_COMMANDS, EXTRA_COMMANDS, register_command
from lightning_mm.lazy import lazy_attributes

if TYPE_CHECKING:
    from lightning_mm.commands.trainer import MultimodalCLI, run_trainer_command

_SOURCES = {
    "MultimodalCLI": "lightning_mm.commands.trainer",
    "run_trainer_command": "lightning_mm.commands.trainer",
}

__all__ = ["BUILTIN_COMMANDS", "EXTRA_COMMANDS", "MultimodalCLI", "register_command", "run_trainer_command"]

__getattr__, __dir__ = lazy_attributes(__name__, _SOURCES)
