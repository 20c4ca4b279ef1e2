"""Project subcommands of ``lightning-mm`` beyond the Trainer ones (each module registers itself)."""

from lightning_mm.commands import chat, export, zoo  # noqa: F401  (registers the subcommands)
from lightning_mm.commands.registry import EXTRA_COMMANDS, register_command

__all__ = ["EXTRA_COMMANDS", "register_command"]
