"""Learning-rate schedules and parameter grouping."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["split_decay", "warmup_schedule"]


def warmup_schedule(total_steps: int, warmup_ratio: float = 0.03, schedule: str = "cosine", min_lr_ratio: float = 0.0):
    """LR multiplier ``f(step)`` for ``LambdaLR``: linear warm-up, then cosine / linear decay or constant.

    Args:
        total_steps: Optimiser steps of the whole run.
        warmup_ratio: Fraction of the steps spent warming up from 0 (LLaVA: 0.03).
        schedule: ``cosine``, ``linear`` or ``constant`` after the warm-up.
        min_lr_ratio: Floor of the decay, as a fraction of the peak LR.
    """
    if schedule not in ("cosine", "linear", "constant"):
        raise ValueError(f"Unknown schedule {schedule!r}: use 'cosine', 'linear' or 'constant'.")
    total = max(int(total_steps), 1)
    warmup = int(math.ceil(warmup_ratio * total))

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return min_lr_ratio + (1 - min_lr_ratio) * decay

    return fn


def split_decay(named_params: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Split trainable parameters into (with weight decay, without): biases, norms and 1-D tensors get none."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay).append(p)
    return decay, no_decay
