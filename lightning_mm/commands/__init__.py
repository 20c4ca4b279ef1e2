"""Project subcommands of ``lightning-mm`` beyond the Trainer ones (each module registers itself)."""

from lightning_mm.commands import zoo  # noqa: F401
