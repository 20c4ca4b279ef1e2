"""The Trainer subcommands of ``lightning-mm`` (``fit``, ``validate``, ``test``, ``predict``): Lightning's CLI with the
project's module and datamodules.

Around Lightning's CLI: every mistake in the command line or a config file is one paragraph
(:class:`~lightning_mm.errors.ConfigError`, exit status 2; duplicated YAML keys included, two placement callbacks for
one component caught before anything is built); torch's thread count fits the CPUs this process may use
(:mod:`~lightning_mm.commands.threads`; a line says so when it lowers the count); and when the standard output is not a terminal, progress comes as plain lines
(:class:`~lightning_mm.callbacks.ProgressLines`) instead of a progress bar.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_mm.callbacks.component import ComponentPlacement
from lightning_mm.callbacks.faults import TrainingFaults
from lightning_mm.callbacks.progress import ProgressLines
from lightning_mm.checkpoint.file import check_checkpoint_file
from lightning_mm.checkpoint.last import find_last_checkpoint
from lightning_mm.checkpoint.read import checkpoint_errors, refuse_unsafe_loading
from lightning_mm.commands.parse_errors import describe_parse_error
from lightning_mm.commands.threads import thread_count_line
from lightning_mm.commands.yaml_keys import YamlFileError, install_unique_keys
from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.errors import ConfigError
from lightning_mm.module import MultimodalModule

__all__ = ["MultimodalCLI", "run_trainer_command"]


class MultimodalCLI(LightningCLI):
    """Lightning CLI for :class:`~lightning_mm.MultimodalModule` (or a subclass) and a VLM datamodule.

    After ``fit`` it validates the final weights and prints the held-out metrics. A ``--ckpt_path`` is checked
    before the run starts (a missing, empty or truncated file is a short error naming it). A parsing error (an unknown
    option or argument, a value of the wrong type or outside its choices, a missing config file) is raised as a
    :class:`~lightning_mm.errors.ConfigError` whose message names the key, the accepted values and the closest one.
    When the standard output is not a terminal and a progress bar would be shown, :class:`ProgressLines` takes its
    place. Every run has :class:`~lightning_mm.callbacks.TrainingFaults` (options ``--faults.*``): a non-finite loss
    stops training with an error, SIGTERM / SIGINT with a resumable ``last.ckpt`` and exit status 143 / 130.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(TrainingFaults, "faults")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as err:
            subcommand = _subcommand(args)
            raise ConfigError(describe_parse_error(str(err), _options(parser, subcommand), subcommand)) from None
        except YamlFileError as err:  # jsonargparse gives the loader a file's name only: the path as it was given
            given = [a for a in _argv(args) if os.path.basename(a.partition("=")[2] or a) == err.path]
            if not given:
                raise
            raise YamlFileError(given[0].partition("=")[2] or given[0], err.detail) from None

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

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        check_one_placement_per_component(config.get("trainer", {}).get("callbacks"))
        count, line = thread_count_line(torch.get_num_threads())
        if count is not None and count != torch.get_num_threads():
            torch.set_num_threads(count)
            rank_zero_info(line)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if wants_progress_lines(trainer_config, sys.stdout):
            callbacks = trainer_config.get("callbacks") or []
            kwargs["callbacks"] = [*(callbacks if isinstance(callbacks, list) else [callbacks]), ProgressLines()]
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        # `--ckpt_path last`: also the logger's earlier versions (a ModelCheckpoint without dirpath writes into the
        # run's version folder, and the resumed run gets a new one)
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            found = find_last_checkpoint(self.trainer)
            if found is not None:
                rank_zero_info(f"--ckpt_path last: resuming from {found}")
                config["ckpt_path"] = found

    def after_fit(self) -> None:
        if self.trainer.fast_dev_run or self.trainer.interrupted:
            return
        results = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        if self.trainer.is_global_zero and results:
            print("\nHeld-out metrics (final weights):", flush=True)
            for key, value in sorted(results[0].items()):
                print(f"  {key:<32} {value:.4f}", flush=True)


def _argv(args: Any) -> list[str]:
    return list(sys.argv[1:] if args is None else args) if isinstance(args, list | tuple) or args is None else []


def _subcommand(args: Any) -> str | None:
    return next((a for a in _argv(args) if a in LightningCLI.subcommands()), None)


def _options(parser: LightningArgumentParser, subcommand: str | None) -> list[str]:
    """The keys the subcommand's parser accepts (``trainer.max_steps``, ``model``, ...)."""
    subcommands = parser._subcommands_action  # jsonargparse keeps the subcommand parsers there
    if subcommand and subcommands is not None:
        parser = subcommands._name_parser_map.get(subcommand, parser)
    return [a.dest for a in parser._actions if a.dest not in (None, argparse.SUPPRESS, "help")]


def check_one_placement_per_component(callbacks: Any) -> None:
    """Refuse two placement callbacks (``FreezeComponent``, ``LoRAComponent``, ...) for one component.

    Args:
        callbacks: ``trainer.callbacks`` as parsed: a list of ``{class_path, init_args}`` entries (or one).

    Raises:
        ConfigError: naming both entries of ``trainer.callbacks`` and the component.
    """
    entries = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
    seen: dict[str, tuple[int, str]] = {}
    for index, entry in enumerate(entries):
        cls = _class_of(entry)
        if cls is None or not issubclass(cls, ComponentPlacement):
            continue
        init_args = entry.get("init_args") or {}
        component = init_args.get("component")
        if component in seen:
            first, first_name = seen[component]
            raise ConfigError(
                f"trainer.callbacks[{first}] ({first_name}) and trainer.callbacks[{index}] ({cls.__name__}) both "
                f"place the {component}: one placement callback per component (remove one of them)."
            )
        seen[component] = (index, cls.__name__)


def _class_of(entry: Any) -> type | None:
    if isinstance(entry, Callback):
        return type(entry)
    class_path = entry.get("class_path") if hasattr(entry, "get") else None
    if not isinstance(class_path, str):
        return None
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def wants_progress_lines(trainer_config: dict[str, Any], stdout: Any) -> bool:
    """Whether :class:`ProgressLines` should stand in for the progress bar: the output is not a terminal, the bar is
    on and no progress bar is among the callbacks."""
    isatty = getattr(stdout, "isatty", None)
    if isatty is not None and isatty():
        return False
    if trainer_config.get("enable_progress_bar") is False:
        return False
    callbacks = trainer_config.get("callbacks") or []
    return not any(isinstance(c, ProgressBar) for c in (callbacks if isinstance(callbacks, Iterable) else [callbacks]))


def run_trainer_command(argv: list[str] | None) -> int:
    """Run ``lightning-mm <fit|validate|test|predict> ...``; ``argv`` None: the process's own arguments.

    Raises:
        ConfigError: for a mistake in the command line or a config file (Lightning's ``MisconfigurationException``
            included).
    """
    install_unique_keys()
    threads = torch.get_num_threads()
    try:
        MultimodalCLI(
            MultimodalModule,
            VLMDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"default_env": False, "exit_on_error": False},
        )
    except MisconfigurationException as err:
        raise ConfigError(str(err)) from err
    finally:
        torch.set_num_threads(threads)  # main() called from Python: leave the caller's count as it was
    return 0
