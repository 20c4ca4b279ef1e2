"""Project subcommands of ``lightning-mm`` beyond the Trainer ones (each module registers itself)."""

from lightning_mm.commands import chat, export, zoo  # noqa: F401
