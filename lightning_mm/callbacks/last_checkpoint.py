"""``BestAndLastCheckpoint``: the best-k checkpoints by a monitored metric, and a ``last.ckpt`` that always holds the
state after the last step.

Lightning's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only in the same call that saved a
top-k checkpoint: ``on_validation_end`` and ``on_train_epoch_end`` save the last one only when
``_last_global_step_saved == trainer.global_step``, which a monitored run reaches only when the score improved, and
``on_train_end`` saves it only when no last checkpoint was ever written. So after a run whose final validation was not
its best (the quickstart: best at step 1500 of 2000), ``last.ckpt`` holds the best step, not the last. With
``save_last="link"`` the link points at the newest top-k file, which is just as old.

This subclass keeps the top-k logic and file names and adds one rule: after every validation (or epoch end, when the
checkpoints are taken there) and when training ends, ``last.ckpt`` is rewritten if it does not hold the current
``global_step``. A link is made only to a top-k file of the current step; otherwise a real file replaces it. The file
is the one Lightning's ``ckpt_path="last"`` resolves (the newest ``last*.ckpt`` of the checkpoint callbacks).
"""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

__all__ = ["BestAndLastCheckpoint"]


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is always the state after the last step.

    The best ``save_top_k`` checkpoints by ``monitor`` are written and named as ``ModelCheckpoint`` writes them;
    ``last.ckpt`` beside them is rewritten after every validation and at the end of training whenever it holds an
    older step, so ``predict``, ``chat``, ``export`` and ``fit --ckpt_path last`` read the final weights. Every
    argument is ``ModelCheckpoint``'s (``save_last`` defaults to ``True`` here).

    Args:
        dirpath: Folder of the checkpoints (None: ``<log dir>/checkpoints``).
        filename: Name pattern of the top-k files (None: ``{epoch}-{step}``).
        monitor: Metric ranking the top-k files (None: the newest one is kept).
        mode: ``min`` or ``max``: which values of ``monitor`` are better.
        save_last: ``True``: write ``last.ckpt``; ``"link"``: link it to the top-k file when one was written at the
            same step (a real file otherwise); ``False``: no last checkpoint (then this is ``ModelCheckpoint``).
        save_top_k: How many of the best checkpoints to keep (-1: all, 0: none).
        save_weights_only: Write the weights only (no optimiser or loop state: such a file cannot resume a run).
        every_n_train_steps: Also check every N optimiser steps (0 or None: off).
        every_n_epochs: Check every N epochs (None: 1).
        save_on_train_epoch_end: Check at the end of the training epoch instead of after validation (None: decided
            from the validation schedule, as ``ModelCheckpoint`` does).
        verbose: Log every save.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        mode: str = "min",
        save_last: bool | Literal["link"] = True,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            verbose=verbose,
            save_last=save_last,
            save_top_k=save_top_k,
            save_weights_only=save_weights_only,
            mode=mode,
            every_n_train_steps=every_n_train_steps,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
        )
        self._last_step_written: int | None = None  # global_step held by last.ckpt (None: not written by this run)

    # ------------------------------------------------------------ when
    def _last_is_stale(self, trainer: L.Trainer) -> bool:
        """Whether ``last.ckpt`` should be rewritten now: a fitting run past step 0 whose last file is older."""
        return (
            bool(self.save_last)
            and not trainer.fast_dev_run
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and trainer.global_step > 0
            and self._last_step_written != trainer.global_step
        )

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self._last_is_stale(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)  # top-k, and last when a top-k file was written now
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the state after the very last step (e.g. max_steps reached between two validations)
        self._refresh_last(trainer)

    # ------------------------------------------------------------ how
    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        """Lightning's last-checkpoint writer, linking only to a top-k file of the current step."""
        if not self.save_last:
            return
        mode = self.save_last
        fresh_top_k = self._last_global_step_saved == trainer.global_step and bool(self._last_checkpoint_saved)
        if mode == "link" and not fresh_top_k:
            self._unlink_last(trainer)  # writing through a link would overwrite the top-k file it points at
            self.save_last = True
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self.save_last = mode
        self._last_step_written = trainer.global_step

    def _unlink_last(self, trainer: L.Trainer) -> None:
        path = self.last_model_path or self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        if trainer.is_global_zero and os.path.islink(path):
            os.remove(path)
        trainer.strategy.barrier()
