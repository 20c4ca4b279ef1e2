"""The ``lightning-mm`` command: Lightning CLI (fit/validate/test/predict) plus project subcommands."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_mm.callbacks.faults import TrainingFaults
from lightning_mm.checkpoint.file import check_checkpoint_file
from lightning_mm.checkpoint.read import checkpoint_errors, refuse_unsafe_loading
from lightning_mm.commands import EXTRA_COMMANDS
from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.errors import find_config_error
from lightning_mm.module import MultimodalModule

__all__ = ["MultimodalCLI", "main"]


class MultimodalCLI(LightningCLI):
    """Lightning CLI for :class:`~lightning_mm.MultimodalModule` (or a subclass) and a VLM datamodule.

    After ``fit`` it validates the final weights and prints the held-out metrics. A ``--ckpt_path`` is checked
    before the run starts (a missing, empty or truncated file is a short error naming it). Every run has
    :class:`~lightning_mm.callbacks.TrainingFaults` (options ``--faults.*``): a non-finite loss stops training with an
    error, SIGTERM / SIGINT with a resumable ``last.ckpt`` and exit status 143 / 130.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(TrainingFaults, "faults")

    def _parse_ckpt_path(self) -> None:
        # Lightning's CLI reads the checkpoint's hyperparameters here, before anything else: check the file first.
        # Every load is weights-only (here, and the run's through --weights_only true), a refusal one short error.
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return super()._parse_ckpt_path()
        config = self.config[subcommand]
        check_checkpoint_file(config.get("ckpt_path"))
        if "weights_only" in config:
            refuse_unsafe_loading(config.get("weights_only"), "--weights_only")
            config["weights_only"] = True
        with checkpoint_errors(config.get("ckpt_path")):
            return super()._parse_ckpt_path()

    def after_fit(self) -> None:
        if self.trainer.fast_dev_run or self.trainer.interrupted:
            return
        results = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        if self.trainer.is_global_zero and results:
            print("\nHeld-out metrics (final weights):")
            for key, value in sorted(results[0].items()):
                print(f"  {key:<32} {value:.4f}")


def main(argv: list[str] | None = None) -> int | None:
    """Entry point of ``lightning-mm``.

    A configuration error (:class:`~lightning_mm.errors.ConfigError`: an unknown model, template, projector or tower,
    a LoRA target that matches nothing, an unreadable checkpoint) is printed as its one-paragraph message, without a
    traceback, and the command exits with status 2.
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
    sys.exit(main())
