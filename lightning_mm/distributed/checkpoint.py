"""Resuming under a sharding strategy: placement checks before the weights load, and adapter-only checkpoints.

Sharding strategies load the weights into the already sharded model, before ``MultimodalModule.on_load_checkpoint``
runs; so the placements (LoRA adapters) must be declared by the run itself, and an adapter-only checkpoint (no frozen
base) must be loaded partially. :class:`PlacementAwareLoading` does both for the project's strategies.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.load import _METADATA_FILENAME, _load_distributed_checkpoint
from lightning.pytorch.utilities.consolidate_checkpoint import _format_checkpoint
from torch import nn
from torch.distributed.checkpoint import FileSystemReader

from lightning_mm.checkpoint.file import check_checkpoint_file
from lightning_mm.checkpoint.format import clean_name, is_adapter_only, saved_placements
from lightning_mm.placement import Placement

__all__ = [
    "PlacementAwareLoading",
    "check_adapter_only_keys",
    "check_placements",
    "consolidate_checkpoint",
    "read_module_state",
]


def read_module_state(path: Path, weights_only: bool | None = None) -> dict[str, Any]:
    """What a checkpoint says of the module: ``placements`` (component -> dict form) and ``adapter_only``.

    Args:
        path: A checkpoint file, or a sharded checkpoint folder (its ``meta.pt`` is read).
        weights_only: Passed to ``torch.load``.
    """
    file = path / _METADATA_FILENAME if path.is_dir() else path
    checkpoint = torch.load(file, mmap=not path.is_dir(), map_location="cpu", weights_only=weights_only)
    return {"placements": saved_placements(checkpoint), "adapter_only": is_adapter_only(checkpoint)}


def check_placements(module: Any, saved: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise unless ``module`` declares the same placement (same parameters) as the checkpoint, component by component.

    A component without a placement counts as ``full``. Under a sharding strategy the placement cannot be adopted from
    the checkpoint: the adapters must exist before the model is sharded, i.e. be declared by the run's callbacks.

    Raises:
        ValueError: naming the first component whose placement differs, and the callback that declares the saved one.
    """
    current: dict[str, Placement] = dict(module.placements)
    stored = {c: Placement.from_dict(d) for c, d in saved.items()}
    for component in sorted(set(current) | set(stored)):
        ours, theirs = current.get(component, Placement("full")), stored.get(component, Placement("full"))
        if ours.same_weights(theirs):
            continue
        raise ValueError(
            f"The checkpoint trained the {component} as {theirs.describe()!r}, but this run declares "
            f"{ours.describe()!r}. Under a sharding strategy the placement must be declared before the model is "
            f"sharded: resume with the checkpoint's placement callbacks ({_callback_hint(component, theirs)})."
        )


def _callback_hint(component: str, placement: Any) -> str:
    if placement.mode == "lora":
        return f"LoRAComponent({component!r}, r={placement.r}, alpha={placement.alpha:g}, ...)"
    name = {"frozen": "FreezeComponent", "full": "FullComponent"}[placement.mode]
    return f"{name}({component!r})"


def check_adapter_only_keys(module: nn.Module, saved_keys: set[str]) -> None:
    """Raise if an adapter-only checkpoint lacks a parameter this run trains.

    Args:
        module: The LightningModule (parameter names may carry FSDP1 wrapper prefixes).
        saved_keys: The state-dict keys the checkpoint holds.
    """
    trainable = {clean_name(n) for n, p in module.named_parameters() if p.requires_grad}
    missing = sorted(trainable - saved_keys)
    if missing:
        raise ValueError(
            f"The adapter-only checkpoint lacks {len(missing)} parameters that this run trains (first: {missing[0]}); "
            "it was written for another placement."
        )


def consolidate_checkpoint(folder: str | Path, output: str | Path | None = None) -> Path:
    """Gather a sharded checkpoint folder (FSDP2, or FSDP1 of earlier versions) into one Lightning checkpoint file.

    Lightning's own consolidation (``python -m lightning.pytorch.utilities.consolidate_checkpoint``) in one process,
    which also reads the folders of ``ModelParallelStrategy``. Its weights load like a single-device checkpoint's
    (``MultimodalModule.load_from_checkpoint``, ``lightning-mm export``); an adapter-only folder gives an adapter-only
    file. Optimiser states stay as the strategy saved them (resume training from the folder itself).

    Args:
        folder: The checkpoint folder (one ``.distcp`` file per rank and ``meta.pt``).
        output: File to write (default: the folder's path with ``.consolidated.ckpt`` appended).

    Returns:
        The path of the written file.
    """
    folder = Path(folder)
    output = Path(output) if output is not None else folder.with_name(folder.name + ".consolidated.ckpt")
    checkpoint = _load_distributed_checkpoint(folder)  # the shards' tensors, whole, nested as they were saved
    if "model" not in checkpoint:  # ModelParallelStrategy names the weights as a Lightning file does
        checkpoint["model"] = checkpoint.pop("state_dict")
    torch.save(_format_checkpoint(checkpoint), output)
    return output


def _dcp_keys(path: Path, prefix: str) -> set[str]:
    keys = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    return {k.removeprefix(prefix + ".") for k in keys if k.startswith(prefix + ".")}


class PlacementAwareLoading:
    """Mixin for Lightning's sharding strategies (``ModelParallelStrategy``).

    Before the weights load: checks the checkpoint's placements against the run's (:func:`check_placements`). For an
    adapter-only checkpoint: checks that every trained parameter is in it, then loads only what it holds (the frozen
    base stays as the run built it: pretrained weights, or the same seed's random init).

    Subclasses set ``_dcp_model_key`` (the key of the model's state in a sharded checkpoint) and implement
    ``_load_partial_sharded(path, keys, weights_only)``.
    """

    _dcp_model_key = "state_dict"

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(checkpoint_path))
        check_checkpoint_file(path)  # missing, empty or truncated: a short error naming it, not torch's
        module = self.lightning_module
        state = read_module_state(path, weights_only)
        check_placements(module, state["placements"])
        if not state["adapter_only"]:
            return super().load_checkpoint(path, weights_only)
        if path.is_dir():
            keys = _dcp_keys(path, self._dcp_model_key)
        else:
            keys = set(torch.load(path, mmap=True, map_location="cpu", weights_only=weights_only)["state_dict"])
        check_adapter_only_keys(module, keys)
        if path.is_dir():
            return self._load_partial_sharded(path, keys, weights_only)
        previous = module._strict_loading
        module.strict_loading = False  # the frozen base is missing on purpose
        try:
            return super().load_checkpoint(path, weights_only)
        finally:
            module._strict_loading = previous

    def _load_partial_sharded(self, path: Path, keys: set[str], weights_only: bool | None) -> dict[str, Any]:
        raise NotImplementedError
