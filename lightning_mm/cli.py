"""The ``lightning-mm`` command: Lightning CLI (fit/validate/test/predict) plus project subcommands."""

from __future__ import annotations

import sys
from collections.abc import Callable

from lightning.pytorch.cli import LightningCLI

from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.module import MultimodalModule

__all__ = ["MultimodalCLI", "main"]

# Subcommands that are not Trainer entry points: name -> (help, runner(argv)).
EXTRA_COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {}


def register_command(name: str, help: str) -> Callable:
    """Decorator adding a ``lightning-mm <name>`` subcommand; the runner receives the remaining argv."""

    def wrap(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        EXTRA_COMMANDS[name] = (help, fn)
        return fn

    return wrap


class MultimodalCLI(LightningCLI):
    """Lightning CLI for :class:`~lightning_mm.MultimodalModule` (or a subclass) and a VLM datamodule.

    After ``fit`` it validates the final weights and prints the held-out metrics.
    """

    def after_fit(self) -> None:
        if self.trainer.fast_dev_run or self.trainer.interrupted:
            return
        results = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        if self.trainer.is_global_zero and results:
            print("\nHeld-out metrics (final weights):")
            for key, value in sorted(results[0].items()):
                print(f"  {key:<32} {value:.4f}")


def main(argv: list[str] | None = None) -> int | None:
    """Entry point of ``lightning-mm``."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    from lightning_mm import commands  # noqa: F401  (registers the extra subcommands)

    if argv and argv[0] in EXTRA_COMMANDS:
        return EXTRA_COMMANDS[argv[0]][1](argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print("Project subcommands: " + ", ".join(f"{k} ({v[0]})" for k, v in sorted(EXTRA_COMMANDS.items())))
    MultimodalCLI(
        MultimodalModule,
        VLMDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if from_sys else argv,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
    )
    return 0


if __name__ == "__main__":
    # run the package's module object, where the extra subcommands register (not this __main__ copy)
    from lightning_mm.cli import main as _main

    sys.exit(_main())
