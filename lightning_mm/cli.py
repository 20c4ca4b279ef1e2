"""The ``lightning-mm`` command: Lightning CLI (fit/validate/test/predict) plus project subcommands.

Only what a subcommand needs is imported, when it runs: ``lightning-mm --help`` and ``lightning-mm zoo`` load neither
Lightning nor torch; ``lightning-mm fit`` loads Lightning's CLI (:mod:`lightning_mm.commands.trainer`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from lightning_mm import __version__, commands
from lightning_mm.commands import EXTRA_COMMANDS
from lightning_mm.commands.threads import NUM_THREADS_ENV
from lightning_mm.errors import ConfigError, did_you_mean, find_config_error
from lightning_mm.lazy import lazy_attributes

if TYPE_CHECKING:
    from lightning_mm.commands.trainer import MultimodalCLI

__all__ = ["TRAINER_SUBCOMMANDS", "MultimodalCLI", "main", "usage"]

#: Lightning's subcommands, with their help line (they run through :class:`MultimodalCLI`).
TRAINER_SUBCOMMANDS = {
    "fit": "train, then validate the final weights (lightning-mm fit --config recipes/quickstart.yaml)",
    "validate": "one evaluation epoch over the validation set",
    "test": "one evaluation epoch over the test set",
    "predict": "write the model's answers for a dataset (e.g. with --ckpt_path)",
}

__getattr__, __dir__ = lazy_attributes(__name__, {"MultimodalCLI": "lightning_mm.commands.trainer"})


def usage() -> str:
    """The text of ``lightning-mm --help``: every subcommand with its help line."""
    width = max(map(len, [*TRAINER_SUBCOMMANDS, *EXTRA_COMMANDS]))
    lines = [
        "usage: lightning-mm <subcommand> [options]",
        "",
        f"Train, evaluate and use LLaVA-style vision-language models (lightning_mm {__version__}).",
        "",
        "Trainer subcommands (Lightning's CLI; `lightning-mm <subcommand> --help` lists the options):",
        *(f"  {name:<{width}}  {text}" for name, text in TRAINER_SUBCOMMANDS.items()),
        "",
        "Project subcommands (`lightning-mm <subcommand> --help` for their options):",
        *(f"  {name:<{width}}  {text}" for name, (text, _) in sorted(EXTRA_COMMANDS.items())),
        "",
        f"Environment: {NUM_THREADS_ENV}=<n> sets torch's thread count (default: the CPUs this process may use).",
        "A mistake in the options or a config file is one `lightning-mm: error: ...` line, exit status 2.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int | None:
    """Entry point of ``lightning-mm``.

    A configuration error (:class:`~lightning_mm.errors.ConfigError`: an unknown option, argument, class or value, a
    missing config file, a duplicated YAML key, an unknown model, template, projector or tower, a LoRA target that
    matches nothing, an unreadable checkpoint) is printed as its one-paragraph message, without a traceback, and the
    command exits with status 2.
    """
    try:
        return _main(argv)
    except Exception as err:
        config_error = find_config_error(err)
        if config_error is None:
            raise
        print(f"lightning-mm: error: {config_error}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int | None:
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [*TRAINER_SUBCOMMANDS, *EXTRA_COMMANDS]
    if not argv:
        raise ConfigError(f"a subcommand is required: {', '.join(names)} (`lightning-mm --help` describes them).")
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"lightning-mm {__version__}")
        return 0
    if argv[0] in EXTRA_COMMANDS:
        return EXTRA_COMMANDS[argv[0]][1](argv[1:])
    if not argv[0].startswith("-") and argv[0] not in TRAINER_SUBCOMMANDS:
        raise ConfigError(
            f"unknown subcommand {argv[0]!r}.{did_you_mean(argv[0], names)} Subcommands: {', '.join(names)}."
        )
    return commands.run_trainer_command(None if from_sys else argv)


if __name__ == "__main__":
    sys.exit(main())
