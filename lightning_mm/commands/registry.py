"""The registry of ``lightning-mm`` subcommands that are not Trainer entry points."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["EXTRA_COMMANDS", "register_command"]

Runner = Callable[[list[str]], int]

# name -> (help, runner(argv))
EXTRA_COMMANDS: dict[str, tuple[str, Runner]] = {}


def register_command(name: str, help: str) -> Callable[[Runner], Runner]:
    """Decorator adding a ``lightning-mm <name>`` subcommand; the runner receives the remaining argv."""

    def wrap(fn: Runner) -> Runner:
        EXTRA_COMMANDS[name] = (help, fn)
        return fn

    return wrap
