"""The registry of ``lightning-mm`` subcommands that are not Trainer entry points.

The built-in ones are listed here with their help line and imported only when they run, so that ``lightning-mm
--help`` and ``lightning-mm zoo`` do not load what ``chat`` and ``export`` need (torch, transformers, Lightning).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["BUILTIN_COMMANDS", "EXTRA_COMMANDS", "register_command"]

Runner = Callable[[list[str]], int]

#: The project's subcommands: name -> (help, the module whose ``@register_command`` defines it).
BUILTIN_COMMANDS: dict[str, tuple[str, str]] = {
    "chat": (
        "answer questions about images with a trained model, streaming the answers",
        "lightning_mm.commands.chat",
    ),
    "export": (
        "merge LoRA and write transformers' format (--format hf) or each part in its library's format",
        "lightning_mm.commands.export",
    ),
    "zoo": ("list the model zoo", "lightning_mm.commands.zoo"),
}


def _deferred(name: str, module: str) -> Runner:
    """A runner that imports ``module`` (which registers the real runner of ``name``) and runs it."""

    def run(argv: list[str]) -> int:
        importlib.import_module(module)
        runner = EXTRA_COMMANDS[name][1]
        if runner is run:
            raise RuntimeError(f"{module} does not register the `lightning-mm {name}` command.")
        return runner(argv)

    return run


# name -> (help, runner(argv)); the built-in runners import their module on first use
EXTRA_COMMANDS: dict[str, tuple[str, Runner]] = {
    name: (help, _deferred(name, module)) for name, (help, module) in BUILTIN_COMMANDS.items()
}


def register_command(name: str, help: str) -> Callable[[Runner], Runner]:
    """Decorator adding a ``lightning-mm <name>`` subcommand; the runner receives the remaining argv."""

    def wrap(fn: Runner) -> Runner:
        EXTRA_COMMANDS[name] = (help, fn)
        return fn

    return wrap
