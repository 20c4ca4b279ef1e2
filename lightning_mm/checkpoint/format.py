"""What a lightning_mm checkpoint holds beyond Lightning's own entries (plain torch, no Lightning, no model code).

* The module's hyperparameters (``checkpoint["hyper_parameters"]``) carry the placements (``placements``: component
  -> :meth:`Placement.to_dict` form): ``load_from_checkpoint`` rebuilds the adapters from them, as any other
  hyperparameter.
* ``checkpoint["lightning_mm"]`` (:data:`CHECKPOINT_KEY`) says how the state dict was written: ``adapter_only`` (the
  frozen base left out), ``base_fingerprint`` (to tell whether a rebuilt base is the one the adapters were trained
  on) and ``pretrained`` (the module's own setting when the hyperparameters say ``pretrained: false`` because every
  weight is in the file). Checkpoints of earlier versions kept the placements there too; they are still read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from lightning_mm.placement.quantize import quantized_state_keys

__all__ = [
    "CHECKPOINT_KEY",
    "PLACEMENTS_HPARAM",
    "adapter_only_state",
    "base_fingerprint",
    "clean_name",
    "fingerprint_mismatches",
    "frozen_parameter_names",
    "is_adapter_only",
    "make_adapter_only",
    "saved_placements",
]

CHECKPOINT_KEY = "lightning_mm"
PLACEMENTS_HPARAM = "placements"
_SAMPLES_PER_TENSOR = 1024
FINGERPRINT_DTYPE = "bfloat16"  # fingerprints round the base to it (older checkpoints: no rounding)
COMPONENT_PREFIXES = ("network.vision.", "network.projector.", "network.llm.")  # state-dict groups of the network
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter name without FSDP1 / checkpoint-wrapper / compile prefixes (the state-dict key)."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def frozen_parameter_names(module: nn.Module) -> set[str]:
    """State-dict names of the parameters that do not train (tied weights under every name they have).

    Names are cleaned of wrapper prefixes (:func:`clean_name`), as the state dicts of those wrappers are.
    """
    return {clean_name(name) for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def adapter_only_state(state_dict: Mapping[str, Any], frozen: set[str]) -> dict[str, Any]:
    """The entries of ``state_dict`` that are not frozen parameters."""
    return {k: v for k, v in state_dict.items() if k not in frozen}


def _is_plain(t: torch.Tensor) -> bool:
    return type(t) in (torch.Tensor, nn.Parameter)  # sharded tensors (DTensor) are skipped


def base_fingerprint(
    tensors: Mapping[str, torch.Tensor], groups: Iterable[str], rounding: torch.dtype | None = None
) -> dict[str, list[float]]:
    """A cheap fingerprint of the frozen base, per group of names, to tell whether a base is the one trained on.

    Each tensor contributes up to 1024 evenly strided elements: the group's fingerprint is their (sum, sum of
    absolute values) in float64.

    Args:
        tensors: Name -> tensor (e.g. the frozen entries of a state dict).
        groups: Name prefixes (``network.vision.``); a tensor counts in the first group it starts with.
        rounding: Round floating-point elements to this dtype first (bfloat16: the same base stored in float32 or in
            bfloat16 gives the same fingerprint); None: as they are.

    Returns:
        Group prefix -> [sum, abs sum], for groups holding at least one plain (unsharded) tensor.
    """
    out: dict[str, list[float]] = {}
    groups = list(groups)
    for name, t in tensors.items():
        group = next((g for g in groups if name.startswith(g)), None)
        if group is None or not _is_plain(t) or t.numel() == 0:
            continue
        flat = t.detach().reshape(-1)
        picked = flat[:: max(flat.numel() // _SAMPLES_PER_TENSOR, 1)]
        if rounding is not None and picked.is_floating_point():
            picked = picked.to(rounding)
        picked = picked.to(torch.float64)
        acc = out.setdefault(group, [0.0, 0.0])
        acc[0] += float(picked.sum())
        acc[1] += float(picked.abs().sum())
    return out


def fingerprint_mismatches(saved: Mapping[str, list[float]], current: Mapping[str, list[float]]) -> list[str]:
    """Groups whose fingerprints differ (relative tolerance 1e-5 of the absolute sum)."""
    bad = []
    for group, (s_sum, s_abs) in saved.items():
        if group not in current:
            continue
        c_sum, c_abs = current[group]
        tol = 1e-5 * max(s_abs, c_abs, 1e-12)
        if not (math.isclose(s_abs, c_abs, abs_tol=tol) and math.isclose(s_sum, c_sum, abs_tol=tol)):
            bad.append(group)
    return bad


def saved_placements(checkpoint: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Component -> placement (dict form) a checkpoint was trained with: its hyperparameters, else the older key."""
    hparams = checkpoint.get("hyper_parameters") or {}
    placements = hparams.get(PLACEMENTS_HPARAM)
    if placements is None:  # written before the placements were hyperparameters
        placements = (checkpoint.get(CHECKPOINT_KEY) or {}).get("placements")
    return {c: dict(p) for c, p in (placements or {}).items()}


def is_adapter_only(checkpoint: Mapping[str, Any]) -> bool:
    """Whether the checkpoint's state dict leaves the frozen base out."""
    return bool((checkpoint.get(CHECKPOINT_KEY) or {}).get("adapter_only"))


def make_adapter_only(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Drop ``module``'s frozen parameters from ``checkpoint["state_dict"]``, recording the base's fingerprint.

    The checkpoint's :data:`CHECKPOINT_KEY` entry gets ``adapter_only: True`` and ``base_fingerprint`` (per component,
    of the frozen weights left out, rounded to ``fingerprint_dtype``), which loading compares with the base it
    rebuilds. Quantised weights leave their quantisation statistics out with them.
    """
    frozen = frozen_parameter_names(module)
    weights = checkpoint["state_dict"]
    state = checkpoint.setdefault(CHECKPOINT_KEY, {})
    state["adapter_only"] = True
    state["fingerprint_dtype"] = FINGERPRINT_DTYPE  # the base may be stored in float32 or bfloat16
    frozen_weights = {k: v for k, v in weights.items() if k in frozen}
    state["base_fingerprint"] = base_fingerprint(frozen_weights, COMPONENT_PREFIXES, getattr(torch, FINGERPRINT_DTYPE))
    stats = {clean_name(k) for k in quantized_state_keys(module)}
    checkpoint["state_dict"] = adapter_only_state(weights, frozen | stats)
