"""Frozen storage dtype: parameters that do not train are stored in the compute dtype, trainable ones in float32.

Under ``bf16-mixed`` autocast a frozen float32 weight is cast to bfloat16 in every forward and again in every
recomputation; stored in bfloat16 it is read as it is, at half the memory. Trainable parameters (LoRA adapters, fully
trained components) keep float32 master weights, so the optimiser state stays float32 too.

The default follows the trainer's precision (:func:`storage_dtype_for_precision`); a placement may override it
(``storage_dtype``). Casting is in place on each parameter's data (``p.data = ...``): parameters keep their identity,
so tied weights stay tied, and applying it again changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lightning_mm.errors import ConfigError, did_you_mean

__all__ = [
    "STORAGE_DTYPES",
    "apply_storage_dtype",
    "check_storage_dtypes",
    "component_storage_dtype",
    "parse_storage_dtype",
    "storage_dtype_for_precision",
]

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_HALF = (torch.bfloat16, torch.float16)


def parse_storage_dtype(name: str | None, component: str | None = None) -> torch.dtype | None:
    """The torch dtype of a ``storage_dtype`` setting (None: none set).

    Raises:
        ConfigError: for an unknown name, naming the key (and the component when given).
    """
    if name is None:
        return None
    if name not in STORAGE_DTYPES:
        where = f" of the {component}" if component else ""
        raise ConfigError(
            f"Unknown storage_dtype {name!r}{where}.{did_you_mean(name, STORAGE_DTYPES)} "
            f"Known: {', '.join(STORAGE_DTYPES)} (or leave it unset to follow the trainer's precision)."
        )
    return STORAGE_DTYPES[name]


def storage_dtype_for_precision(precision: str | None) -> torch.dtype | None:
    """The frozen storage dtype a Lightning ``precision`` setting implies.

    ``bf16-mixed`` -> bfloat16, ``16-mixed`` -> float16; every other setting (``32-true``; ``bf16-true`` and
    ``16-true``, where Lightning converts the whole module itself) -> None: parameters keep their dtype.
    """
    precision = str(precision) if precision is not None else ""
    if precision.startswith("bf16-mixed"):
        return torch.bfloat16
    if precision.startswith("16-mixed"):
        return torch.float16
    return None


def component_storage_dtype(placement: Any, default: torch.dtype | None, component: str) -> torch.dtype | None:
    """A component's frozen storage dtype: its placement's ``storage_dtype`` when set, else ``default``."""
    own = parse_storage_dtype(getattr(placement, "storage_dtype", None), component)
    return own if own is not None else default


def check_storage_dtypes(placements: Mapping[str, Any], precision: str | None) -> None:
    """Refuse a half-precision storage dtype where nothing casts activations to it (no autocast).

    Under ``32-true`` (or ``64-true``) a frozen bfloat16 weight would meet float32 activations and the matrix
    products would fail on the dtype mismatch.

    Raises:
        ConfigError: naming the component, its ``storage_dtype`` and the precision.
    """
    precision = str(precision) if precision is not None else ""
    if "mixed" in precision or "true" not in precision or precision.startswith(("bf16", "16")):
        return  # autocast, or Lightning converts the whole module
    for component, placement in placements.items():
        dtype = parse_storage_dtype(getattr(placement, "storage_dtype", None), component)
        if dtype in _HALF:
            raise ConfigError(
                f"storage_dtype={placement.storage_dtype!r} of the {component} needs autocast: under precision "
                f"{precision!r} its frozen weights would meet float32 activations. Use precision 'bf16-mixed' "
                "(which stores frozen weights in bfloat16 by default), or drop storage_dtype."
            )


def _is_plain(p: torch.Tensor) -> bool:
    return type(p.data) is torch.Tensor  # a sharded (DTensor) or quantised (bitsandbytes) parameter is left alone


def apply_storage_dtype(module: nn.Module, dtype: torch.dtype | None) -> int:
    """Store ``module``'s frozen floating-point parameters in ``dtype`` and its trainable ones in float32 (in place).

    Args:
        module: A component's module (placements applied: ``requires_grad`` says what trains).
        dtype: The frozen storage dtype; None leaves the frozen parameters as they are. Trainable parameters stored in
            a half dtype are brought to float32 (master weights) whenever ``dtype`` is set.

    Returns:
        The number of parameters whose dtype changed.
    """
    if dtype is None:
        return 0
    changed = 0
    for p in module.parameters():  # each shared parameter once
        if not _is_plain(p) or not p.is_floating_point():
            continue
        target = dtype if not p.requires_grad else (torch.float32 if p.dtype in _HALF else p.dtype)
        if p.dtype != target:
            p.data = p.data.to(target)
            changed += 1
    return changed  # buffers (rotary frequencies, positions) keep their dtype
