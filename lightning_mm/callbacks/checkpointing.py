"""Checkpoints that carry the placement, and adapter-only checkpoints (trained weights + placement, no frozen base).

The module writes ``checkpoint["lightning_mm"]`` in ``on_save_checkpoint``: the placement of every declared
component and whether the state dict is adapter-only. On load, the placement is rebuilt (adapters injected) before
the weights load, and an adapter-only state dict is completed with the freshly built base.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

__all__ = [
    "CHECKPOINT_KEY",
    "AdapterOnlyCheckpoint",
    "adapter_only_state",
    "base_fingerprint",
    "fingerprint_mismatches",
    "frozen_parameter_names",
]

CHECKPOINT_KEY = "lightning_mm"
_SAMPLES_PER_TENSOR = 1024


def frozen_parameter_names(module: nn.Module) -> set[str]:
    """State-dict names of the parameters that do not train (tied weights under every name they have).

    Names are cleaned of FSDP1 / checkpoint-wrapper prefixes, as the state dicts of those wrappers are.
    """
    from lightning_mm.distributed.fsdp1 import clean_name

    return {clean_name(name) for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _is_plain(t: torch.Tensor) -> bool:
    return type(t) in (torch.Tensor, nn.Parameter)  # sharded tensors (DTensor) are skipped


def base_fingerprint(tensors: Mapping[str, torch.Tensor], groups: Iterable[str]) -> dict[str, list[float]]:
    """A cheap fingerprint of the frozen base, per group of names, to tell whether a base is the one trained on.

    Each tensor contributes up to 1024 evenly strided elements: the group's fingerprint is their (sum, sum of
    absolute values) in float64.

    Args:
        tensors: Name -> tensor (e.g. the frozen entries of a state dict).
        groups: Name prefixes (``network.vision.``); a tensor counts in the first group it starts with.

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
        picked = flat[:: max(flat.numel() // _SAMPLES_PER_TENSOR, 1)].to(torch.float64)
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


class AdapterOnlyCheckpoint(Callback):
    """Write adapter-only checkpoints: the trained weights and the placement, without the frozen base.

    Every checkpoint the trainer writes from ``setup`` on (``ModelCheckpoint``, ``trainer.save_checkpoint``) keeps the
    parameters that train (LoRA matrices, fully trained components), buffers, optimiser and loop state, and drops the
    frozen parameters. Loading it (``MultimodalModule.load_from_checkpoint`` or ``fit(ckpt_path=...)``) builds the base
    as the model's config says (pretrained weights, or a random init under the same seed), injects the adapters, and
    fills the frozen weights from that fresh base; a warning names the components whose base differs from the one the
    adapters were trained on.

    The module keeps writing adapter-only checkpoints after the run (``module.adapter_only_checkpoints``).
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "adapter_only_checkpoints"):
            raise TypeError(f"{type(self).__name__} needs a MultimodalModule, got {type(pl_module).__name__}.")
        pl_module.adapter_only_checkpoints = True


def adapter_only_state(state_dict: Mapping[str, Any], frozen: set[str]) -> dict[str, Any]:
    """The entries of ``state_dict`` that are not frozen parameters."""
    return {k: v for k, v in state_dict.items() if k not in frozen}
