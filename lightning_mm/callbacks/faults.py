"""Training faults: a non-finite loss stops the run before it reaches the weights; SIGTERM and SIGINT stop it with a
resumable checkpoint and a non-zero exit status.

What Lightning does on its own (2.6): after a NaN loss it trains on (every later step is NaN) and its checkpoints hold
NaN weights. Its signal connector turns SIGTERM into ``trainer.received_sigterm``, and the loops raise
``SIGTERMException`` (a ``SystemExit`` without a code) at the end of the batch in progress: the process exits with
status 0 and writes no checkpoint. SIGINT raises ``KeyboardInterrupt`` wherever the process is, which Lightning turns
into exit status 1, also without a checkpoint. :class:`TrainingFaults` builds on that machinery: both signals set
Lightning's flag, the stop waits for the end of the accumulation window, and the ``SIGTERMException`` on its way out
writes ``last.ckpt`` and carries the exit status.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_mm.callbacks.non_finite import (
    NonFiniteError,
    describe_names,
    non_finite_flags,
    non_finite_names,
    sample_ids,
)

__all__ = ["NonFiniteError", "TrainingFaults", "signal_exit_status"]

log = logging.getLogger(__name__)

_HANDLED = (signal.SIGTERM, signal.SIGINT)


def signal_exit_status(signum: int) -> int:
    """The exit status of a run stopped by signal ``signum``: the shell's ``128 + signum`` (143 SIGTERM, 130 SIGINT)."""
    return 128 + int(signum)


def _window_ends(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether micro-batch ``batch_idx`` of the epoch ends an accumulation window (an optimiser step follows it)."""
    done = batch_idx + 1
    return done % trainer.accumulate_grad_batches == 0 or done >= trainer.num_training_batches


def _set_stop_flag(trainer: L.Trainer, value: bool) -> None:
    """Set ``trainer.received_sigterm``: Lightning's loops raise ``SIGTERMException`` at their next check when it is on."""
    connector = getattr(trainer, "_signal_connector", None)
    if connector is not None:
        connector.received_sigterm = value


def _last_checkpoint_path(trainer: L.Trainer) -> tuple[str, ModelCheckpoint | None]:
    """Where ``--ckpt_path last`` looks: the ``last`` file of the trainer's ``ModelCheckpoint`` (one with
    ``save_last`` first; the file it last wrote if any), else ``<default_root_dir>/checkpoints/last.ckpt``."""
    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    chosen = next((cb for cb in callbacks if cb.save_last), callbacks[0] if callbacks else None)
    if chosen is None:
        return os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt"), None
    if chosen.last_model_path:
        return chosen.last_model_path, chosen
    metrics = {"epoch": torch.tensor(trainer.current_epoch), "step": torch.tensor(trainer.global_step)}
    return chosen.format_checkpoint_name(metrics, chosen.CHECKPOINT_NAME_LAST), chosen


class TrainingFaults(Callback):
    """Stops training on a non-finite loss or gradient, and on SIGTERM / SIGINT with a resumable checkpoint.

    ``lightning-mm`` adds it to every run (options under ``--faults.*``); add it to your own ``Trainer`` yourself.

    **Non-finite values.** The loss of every micro-batch is flagged on its device; before each optimiser step the
    flags of the accumulation window (and, with ``check_gradients``, the gradients) are read once and the decision is
    reduced over all ranks, so every rank raises :class:`~lightning_mm.callbacks.NonFiniteError` at the same step and
    none waits in a collective. The step is not taken: the weights stay those of the steps before. The error names the
    global step (``trainer.global_step``, the step Lightning's loggers record), the epoch, the micro-batch and its
    sample ids (the batch's ``id`` entry). With ``check_checkpoints``, a checkpoint whose weights hold a NaN or an
    infinity is refused before it is written (the same error, naming the tensors), whoever writes it: the
    ``ModelCheckpoint``s, ``on_exception`` checkpoints, ``trainer.save_checkpoint`` (weights-only files skip callback
    hooks and are not checked).

    **Signals.** From the start of training, SIGTERM (what schedulers and ``docker stop`` send) and the first SIGINT
    (Ctrl+C) ask Lightning to stop (``trainer.received_sigterm``); the stop comes at the end of the optimiser step in
    progress (never inside an accumulation window; under data parallelism the ranks agree on the step). The
    checkpoint is then written where ``--ckpt_path last`` finds it: the ``last`` file of the trainer's
    ``ModelCheckpoint`` (else ``<default_root_dir>/checkpoints/last.ckpt``), and the process exits with status
    ``128 + signal``: 143 for SIGTERM, 130 for SIGINT. A second SIGINT stops at once, as Lightning does without this
    callback (exit status 1, no checkpoint).

    Args:
        check_gradients: Also stop when a gradient is not finite though the losses are (skipped under ``16-mixed``
            precision, whose gradient scaler skips such steps itself).
        check_checkpoints: Refuse to write a checkpoint whose weights are not all finite.
        save_on_signal: Handle SIGTERM and SIGINT as above; off leaves them to Lightning.
    """

    def __init__(
        self, check_gradients: bool = True, check_checkpoints: bool = True, save_on_signal: bool = True
    ) -> None:
        self.check_gradients = check_gradients
        self.check_checkpoints = check_checkpoints
        self.save_on_signal = save_on_signal
        self._batch: tuple[int, list[str] | None] = (0, None)  # the micro-batch in progress: index, sample ids
        self._window: list[tuple[torch.Tensor, int, list[str] | None]] = []  # (loss, micro-batch index, sample ids)
        self._trainer: L.Trainer | None = None
        self._signal: int | None = None  # the first signal received
        self._mid_window = False  # between micro-batches of an accumulation window
        self._lightning_sigterm: Any = None  # Lightning's SIGTERM handler, which this callback's handlers call
        self._previous: dict[int, Any] = {}
        self._saved_path: str | None = None  # the checkpoint written on a signal, and its global step
        self._saved_step = -1

    # ------------------------------------------------------------------------------------------------ non-finite
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        self._batch = (batch_idx, sample_ids(batch))

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._window.append((loss.detach(), *self._batch))  # read at the optimiser step: no host sync per micro-batch

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        window, self._window = self._window, []
        losses = non_finite_flags(loss for loss, _, _ in window)  # (W,)
        grads: list[tuple[str, torch.Tensor]] = []
        if self.check_gradients and getattr(trainer.precision_plugin, "scaler", None) is None:
            stepped = {id(p) for group in optimizer.param_groups for p in group["params"] if p.grad is not None}
            grads = [(name, p.grad) for name, p in pl_module.named_parameters() if id(p) in stepped]
        grad_flags = non_finite_flags(g for _, g in grads)  # (P,)
        device = trainer.strategy.root_device
        local = torch.stack([losses.any().to(device), grad_flags.any().to(device)]).float()  # (2,): loss, gradient
        ranks = trainer.strategy.reduce(local.clone(), reduce_op="sum") if trainer.world_size > 1 else local  # in place
        (loss_ranks, grad_ranks), (loss_here, grad_here) = ranks.tolist(), local.tolist()  # one host sync
        if not (loss_ranks or grad_ranks):  # every rank decides the same
            return
        where = f"global step {trainer.global_step} (epoch {trainer.current_epoch})"
        if loss_here:
            flags = losses.tolist()
            bad = [entry for entry, flag in zip(window, flags, strict=True) if flag]
            loss, batch_idx, ids = bad[0]
            samples = f", samples {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}" if ids else ""
            more = f" ({len(bad)} of the {len(window)} micro-batches of the step)" if len(window) > 1 else ""
            what = f"Non-finite training loss ({float(loss)}) at {where}, batch {batch_idx}{samples}{more}"
        elif loss_ranks:
            what = (
                f"Non-finite training loss at {where} on {int(loss_ranks)} of {trainer.world_size} ranks (not this one)"
            )
        elif grad_here:
            names = [name for (name, _), flag in zip(grads, grad_flags.tolist(), strict=True) if flag]
            what = f"Non-finite gradients at {where} with finite losses, in {describe_names(names)}"
        else:
            what = f"Non-finite gradients at {where} on {int(grad_ranks)} of {trainer.world_size} ranks (not this one)"
        raise NonFiniteError(
            f"{what}. Training stopped before the optimiser step: the weights are those of the {trainer.global_step} "
            "steps before it, and no checkpoint holds non-finite values. Look at those samples, the learning rate, "
            "the precision (fp16 overflows), or resume from the last checkpoint."
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if not self.check_checkpoints:
            return
        names = non_finite_names(checkpoint.get("state_dict") or {})
        if trainer.world_size > 1:  # every rank writes (its part of) the checkpoint: all refuse together
            if not trainer.strategy.reduce_boolean_decision(bool(names), all=False):
                return
        elif not names:
            return
        where = f"at global step {trainer.global_step}"
        raise NonFiniteError(
            f"Refusing to write a checkpoint {where}: weights hold NaN or infinite values"
            + (f" ({describe_names(names)})." if names else " on another rank.")
        )

    # ------------------------------------------------------------------------------------------------ signals
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._window, self._signal, self._mid_window, self._trainer = [], None, False, trainer
        self._saved_path, self._saved_step = None, -1
        if not self.save_on_signal or threading.current_thread() is not threading.main_thread():
            return
        self._lightning_sigterm = signal.getsignal(signal.SIGTERM)  # registered by Lightning when fit started
        for signum in _HANDLED:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._signal is not None:  # a second Ctrl+C: stop at once
            self._restore_handlers()
            raise KeyboardInterrupt
        trainer = self._trainer
        if self._signal is None:
            self._signal = signum
            if trainer is not None and trainer.is_global_zero:
                name = signal.Signals(signum).name
                more = " (Ctrl+C again stops at once, without a checkpoint)" if signum == signal.SIGINT else ""
                os.write(2, f"\n{name}: stopping after this optimiser step, with a checkpoint{more}.\n".encode())
        if callable(self._lightning_sigterm):
            self._lightning_sigterm(signum, frame)  # Lightning's: sets received_sigterm, signals launched processes
        if trainer is not None and self._mid_window:
            _set_stop_flag(trainer, False)  # not inside an accumulation window: set again when the window ends

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ):
        if not self.save_on_signal:
            return
        received = self._signal is not None or trainer.received_sigterm
        if not _window_ends(trainer, batch_idx):
            self._mid_window = True
            if trainer.received_sigterm:
                _set_stop_flag(trainer, False)  # Lightning would stop after this micro-batch and lose the window
            return
        self._mid_window = False
        if trainer.world_size > 1:
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if received:
            # the state ModelCheckpoint(every_n_train_steps=...) saves: a resumed run starts with the next batch
            self._save(trainer)
            _set_stop_flag(trainer, True)  # every rank raises SIGTERMException once this batch ends

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if not self.save_on_signal or not isinstance(exception, SIGTERMException):
            return
        signum = self._signal or signal.SIGTERM
        exception.code = signal_exit_status(signum)  # SystemExit's status: non-zero
        if not trainer.sanity_checking and self._saved_step != trainer.global_step:
            self._save(trainer)  # stopped elsewhere (in validation): the state as it is
        if trainer.is_global_zero and self._saved_path:
            log.warning(
                "%s: saved %s at global step %d; resume with --ckpt_path last (exit status %d)",
                signal.Signals(signum).name,
                self._saved_path,
                self._saved_step,
                exception.code,
            )

    def _save(self, trainer: L.Trainer) -> None:
        path, callback = _last_checkpoint_path(trainer)
        if callback is not None:
            callback.last_model_path = path  # part of the checkpoint's callback state
        trainer.save_checkpoint(path)
        self._saved_path, self._saved_step = path, trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()
        self._trainer = None

    def _restore_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous)
        self._previous = {}
