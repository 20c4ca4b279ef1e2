"""Learning-rate schedules (transformers' own) and parameter grouping."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler

__all__ = ["SCHEDULES", "build_scheduler", "split_decay", "warmup_schedule", "warmup_steps"]

#: Schedule after the warm-up -> transformers' scheduler name (``transformers.get_scheduler``).
SCHEDULES = {"cosine": "cosine_with_min_lr", "linear": "linear", "constant": "constant_with_warmup"}


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Warm-up steps of a run: ``ceil(warmup_ratio * total_steps)``."""
    return int(math.ceil(warmup_ratio * max(int(total_steps), 1)))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.03,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """transformers' scheduler for a linear warm-up, then cosine / linear decay or a constant LR (step it per step).

    ``cosine`` is ``get_scheduler("cosine_with_min_lr", min_lr_rate=min_lr_ratio)``, ``linear`` is ``"linear"`` and
    ``constant`` is ``"constant_with_warmup"``: the warm-up rises from 0 at the first step
    (``step / warmup_steps``), as in transformers' ``Trainer``.

    Args:
        optimizer: The optimiser whose learning rates are scheduled (their values are the peaks).
        total_steps: Optimiser steps of the whole run.
        warmup_ratio: Fraction of the steps spent warming up from 0 (LLaVA: 0.03).
        schedule: ``cosine``, ``linear`` or ``constant`` after the warm-up.
        min_lr_ratio: Floor of the cosine decay, as a fraction of the peak LR (transformers' linear decay has none).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}: use {', '.join(map(repr, SCHEDULES))}.")
    if min_lr_ratio and schedule != "cosine":
        raise ValueError(f"min_lr_ratio={min_lr_ratio} applies to the 'cosine' schedule only, not {schedule!r}.")
    total = max(int(total_steps), 1)
    return get_scheduler(
        SCHEDULES[schedule],
        optimizer,
        num_warmup_steps=warmup_steps(total, warmup_ratio),
        num_training_steps=total,
        scheduler_specific_kwargs={"min_lr_rate": min_lr_ratio} if schedule == "cosine" else None,
    )


def warmup_schedule(
    total_steps: int, warmup_ratio: float = 0.03, schedule: str = "cosine", min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """Deprecated: the LR multiplier ``f(step)`` of :func:`build_scheduler` (for a ``LambdaLR``)."""
    warnings.warn(
        "lightning_mm.optim.warmup_schedule is deprecated: use build_scheduler(optimizer, ...), which returns "
        "transformers' scheduler.",
        DeprecationWarning,
        stacklevel=2,
    )
    probe = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    return build_scheduler(probe, total_steps, warmup_ratio, schedule, min_lr_ratio).lr_lambdas[0]


def split_decay(named_params: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Split trainable parameters into (with weight decay, without): biases, norms and 1-D tensors get none."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay).append(p)
    return decay, no_decay
