"""Non-finite values in training: where they are, and the error that stops a run on them.

Plain functions over tensors (no Lightning): :class:`~lightning_mm.callbacks.TrainingFaults` calls them on the losses
of an accumulation window, on the gradients before the optimiser step and on the weights of every checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["NonFiniteError", "non_finite_flags", "non_finite_names", "sample_ids"]

#: Dtypes whose values are checked (quantised storage such as bitsandbytes' uint8 and float8 are left alone).
CHECKED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_SHOWN = 6  # names listed in a message


class NonFiniteError(RuntimeError):
    """A NaN or infinite training loss, gradient or weight: training stops, and no checkpoint holds such weights."""


def _local(value: Any) -> list[torch.Tensor]:
    """The tensors of this process behind ``value``: a tensor, a DTensor's local shard, a ShardedTensor's shards."""
    if hasattr(value, "to_local"):  # DTensor (FSDP2, sharded state dicts)
        value = value.to_local()
    if hasattr(value, "local_shards"):  # ShardedTensor (FSDP1 sharded state dicts)
        return [shard.tensor for shard in value.local_shards()]
    if isinstance(value, torch.Tensor) and value.dtype in CHECKED_DTYPES:
        return [value]
    return []


def non_finite_flags(tensors: Iterable[Any]) -> torch.Tensor:
    """(N,) bool: whether each tensor (or its local shards) holds a NaN or an infinity, computed without a host sync.

    Tensors on several devices are flagged on the first one's device; an empty input gives an empty tensor.
    """
    flags = []
    for value in tensors:
        parts = _local(value)
        bad = [~torch.isfinite(p).all() for p in parts if p.numel()]  # 0-dim bools, on each part's device
        if not bad:
            flags.append(None)
            continue
        flag = bad[0]
        for other in bad[1:]:
            flag = flag | other.to(flag.device)
        flags.append(flag)
    present = [f for f in flags if f is not None]
    if not present:
        return torch.zeros(len(flags), dtype=torch.bool)
    device = present[0].device
    false = torch.zeros((), dtype=torch.bool, device=device)
    return torch.stack([false if f is None else f.to(device) for f in flags])  # (N,)


def non_finite_names(named: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[str]:
    """The names of the tensors (of a state dict, or ``named_parameters``-like pairs) holding a NaN or an infinity."""
    pairs = list(named.items() if isinstance(named, Mapping) else named)
    if not pairs:
        return []
    flags = non_finite_flags(value for _, value in pairs).tolist()  # one host sync
    return [name for (name, _), bad in zip(pairs, flags, strict=True) if bad]


def describe_names(names: Sequence[str]) -> str:
    """``a, b, c`` for a few names, ``a, b, ... (12 in all)`` for many."""
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown}, ... ({len(names)} in all)"


def sample_ids(batch: Any) -> list[str] | None:
    """The sample ids of a collated batch (its ``id`` entry), as strings; None if it carries none."""
    ids = batch.get("id") if isinstance(batch, Mapping) else None
    if ids is None:
        return None
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    return [str(i) for i in ids] if isinstance(ids, (list, tuple)) else [str(ids)]
