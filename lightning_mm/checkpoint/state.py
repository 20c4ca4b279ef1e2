"""What :class:`~lightning_mm.MultimodalModule` writes into its checkpoints and reads back (its hook bodies).

The placements are hyperparameters of the module (``hparams.placements``), saved and restored by Lightning like any
other: ``load_from_checkpoint`` builds the network with its adapters before the weights load. What is left here:

* saving: a whole checkpoint (every weight in the file) records ``pretrained: false`` in its hyperparameters, so
  loading it builds the network from configs and never reads (or downloads) the pretrained weights again; the
  module's own setting is kept under :data:`~lightning_mm.checkpoint.format.CHECKPOINT_KEY` and restored on load.
* loading into a module that exists already (``fit(ckpt_path=...)``): it takes the checkpoint's placement for every
  component it does not declare, and refuses a different one; checkpoints of earlier versions (placements under the
  checkpoint key) are read the same way. An adapter-only state dict is completed with the freshly built base.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_mm.checkpoint.format import (
    CHECKPOINT_KEY,
    base_fingerprint,
    fingerprint_mismatches,
    frozen_parameter_names,
    is_adapter_only,
    saved_placements,
)
from lightning_mm.placement import Placement

__all__ = ["load_module_state", "save_module_state"]


def save_module_state(module: Any, checkpoint: dict[str, Any]) -> None:
    """``on_save_checkpoint``: mark the checkpoint whole or adapter-only; a whole one needs no pretrained source."""
    state = checkpoint.setdefault(CHECKPOINT_KEY, {})
    state["adapter_only"] = bool(state.get("adapter_only"))
    hparams = checkpoint.get("hyper_parameters")
    if not state["adapter_only"] and isinstance(hparams, dict) and hparams.get("pretrained"):
        state["pretrained"] = True
        checkpoint["hyper_parameters"] = {**hparams, "pretrained": False}  # built from configs, then loaded


def adopt_placements(module: Any, checkpoint: dict[str, Any]) -> None:
    """Declare the checkpoint's placement for each component ``module`` leaves undeclared; raise on a different one."""
    current = module.placements
    for component, data in saved_placements(checkpoint).items():
        saved = Placement.from_dict(data)
        ours = current.get(component)
        if ours is None:
            module.set_placement(component, saved)
        elif not ours.same_weights(saved):
            raise ValueError(
                f"The checkpoint trained the {component} as {saved.describe()!r}, but this run declares "
                f"{ours.describe()!r}. Resume with the checkpoint's placement, or start a new run from its "
                "weights (MultimodalModule.load_from_checkpoint, then fit with the new placement)."
            )


def load_module_state(module: Any, checkpoint: dict[str, Any]) -> None:
    """``on_load_checkpoint``: placements in place, then an adapter-only state dict completed with the base."""
    adopt_placements(module, checkpoint)
    if module.network is None:
        module.configure_model()
    state = checkpoint.get(CHECKPOINT_KEY) or {}
    if state.get("pretrained") is not None:  # the module's setting, for what follows (later adapter-only saves)
        module.pretrained = module.hparams["pretrained"] = bool(state["pretrained"])
    if is_adapter_only(checkpoint) and "state_dict" in checkpoint:  # sharding strategies loaded it themselves
        rounding = getattr(torch, state["fingerprint_dtype"]) if state.get("fingerprint_dtype") else None
        _complete_adapter_only(module, checkpoint, state.get("base_fingerprint") or {}, rounding)


def _complete_adapter_only(
    module: Any, checkpoint: dict[str, Any], fingerprint: dict[str, list[float]], rounding: torch.dtype | None
) -> None:
    weights = checkpoint["state_dict"]
    frozen = frozen_parameter_names(module)
    base = {k: v for k, v in module.state_dict().items() if k not in weights}
    current = base_fingerprint({k: v for k, v in base.items() if k in frozen}, fingerprint, rounding)
    mismatched = fingerprint_mismatches(fingerprint, current)
    module.base_mismatch = [g.removeprefix("network.").rstrip(".") for g in mismatched]
    if mismatched:
        names = ", ".join(module.base_mismatch)
        rank_zero_warn(
            f"Adapter-only checkpoint: the frozen base of the {names} differs from the one the adapters were "
            "trained on (other pretrained weights, or a random init under another seed)."
        )
    weights.update(base)
