"""FSDP1: the block auto-wrap policy, the requires-grad check, and :class:`VLMFSDPStrategy` (YAML-configurable).

FSDP1 flattens each wrapped unit into one ``FlatParameter``. With ``use_orig_params=True`` (required here) frozen and
trainable parameters (a LoRA layer's base and adapters) may share a unit; with ``use_orig_params=False`` every unit
needs one ``requires_grad`` for all its parameters, which a LoRA placement never gives. The original parameters stay
the same objects, but they become 1-D views of their shard, so shapes must be read before wrapping
(:func:`parameter_ndims`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.fabric.strategies.fsdp import _get_sharded_state_dict_context
from lightning.fabric.utilities.load import _METADATA_FILENAME
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.strategies.fsdp import _move_torchmetrics_to_device, _setup_activation_checkpointing
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn
from torch.distributed.fsdp.wrap import CustomPolicy

from lightning_mm.distributed.checkpoint import PlacementAwareLoading
from lightning_mm.distributed.units import shard_units

__all__ = [
    "VLMBlockPolicy",
    "VLMFSDPStrategy",
    "clean_name",
    "mixed_requires_grad_units",
    "parameter_ndims",
    "split_decay_by_ndim",
]

_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter name without FSDP1 / checkpoint-wrapper / compile prefixes (the state-dict key)."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _network_of(root: nn.Module) -> nn.Module:
    network = getattr(root, "network", root)  # the LightningModule, or the network itself
    if network is None or not all(hasattr(network, c) for c in ("vision", "projector", "llm")):
        raise TypeError(
            f"VLMBlockPolicy wraps a VisionLanguageModel (or a module whose `network` is one); got {type(root).__name__}"
            " without a built network. Build it first (configure_model)."
        )
    return network


class VLMBlockPolicy(CustomPolicy):
    """FSDP1 auto-wrap policy: one unit per vision block, the projector, one per LLM decoder layer; the rest is root.

    The units are found when FSDP applies the policy (the network is built in ``configure_model``, after the strategy
    is created), so the policy can be passed to a strategy before the model exists:
    ``FSDPStrategy(auto_wrap_policy=VLMBlockPolicy())``.
    """

    def __init__(self) -> None:
        self._units: set[int] = set()
        super().__init__(self._is_unit)

    def bind(self, root: nn.Module) -> dict[str, nn.Module]:
        """Find the units of ``root``'s network; returns them by name (relative to the network)."""
        units = shard_units(_network_of(root))
        self._units = {id(m) for m in units.values()}
        return units

    def _is_unit(self, module: nn.Module) -> bool:
        return id(module) in self._units

    def _run_policy(self, root_module: nn.Module, ignored_modules: set[nn.Module], root_kwargs: dict[str, Any]):
        # FSDP's policy entry point: bind to the module being wrapped, then select the units
        self.bind(root_module)
        return super()._run_policy(root_module, ignored_modules, root_kwargs)


def mixed_requires_grad_units(network: nn.Module) -> dict[str, tuple[int, int]]:
    """Units (as :func:`~lightning_mm.distributed.shard_units`, plus ``<root>``) holding frozen and trainable params.

    Returns:
        Unit name -> (trainable, frozen) parameter counts, only for units that hold both. Under FSDP1 with
        ``use_orig_params=False`` each of them would fail ("uniform requires_grad").
    """
    units = shard_units(network)
    owner: dict[int, str] = {}
    for unit_name, unit in units.items():
        for p in unit.parameters():
            owner[id(p)] = unit_name
    counts: dict[str, list[int]] = {}
    for p in network.parameters():
        c = counts.setdefault(owner.get(id(p), "<root>"), [0, 0])
        c[0 if p.requires_grad else 1] += 1
    return {name: (t, f) for name, (t, f) in counts.items() if t and f}


def parameter_ndims(module: nn.Module) -> dict[str, int]:
    """Clean parameter name -> number of dimensions, read before FSDP1 flattens the parameters."""
    return {clean_name(n): p.ndim for n, p in module.named_parameters()}


def split_decay_by_ndim(
    named_params: Iterable[tuple[str, nn.Parameter]], ndims: dict[str, int]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """:func:`lightning_mm.optim.split_decay` with the dimensions read before wrapping (FSDP1's views are 1-D).

    Args:
        named_params: (name, parameter) pairs, names possibly holding wrapper prefixes.
        ndims: Clean name -> ndim (:func:`parameter_ndims` of the same module before wrapping).
    """
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        name = clean_name(name)
        ndim = ndims.get(name, p.ndim)
        (no_decay if ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay).append(p)
    return decay, no_decay


class VLMFSDPStrategy(PlacementAwareLoading, FSDPStrategy):
    """Lightning's ``FSDPStrategy`` (FSDP1) with the block wrap policy, configurable from YAML.

    Lightning's own strategy takes the wrap policy as a Python object, which a YAML recipe cannot express (the CLI
    drops it). This one wraps each vision block, the projector and each LLM decoder layer (:class:`VLMBlockPolicy`),
    always with ``use_orig_params=True``; activation checkpointing is the module's own
    (``MultimodalModule(activation_checkpointing=true)``). Resuming checks that the run declares the checkpoint's
    placements, and adapter-only checkpoints load (:class:`~lightning_mm.callbacks.AdapterOnlyCheckpoint`).
    It also runs on CPU with ``gloo`` (the device is passed to FSDP as a ``torch.device``), which is how it is tested.

    Args:
        sharding_strategy: ``FULL_SHARD`` (ZeRO-3), ``SHARD_GRAD_OP`` (ZeRO-2), ``NO_SHARD`` (DDP-like) or
            ``HYBRID_SHARD`` (shard within a node, replicate across nodes).
        state_dict_type: ``full`` (one file, gathered on rank 0) or ``sharded`` (a folder, one file per rank).
        cpu_offload: Keep the sharded parameters (and gradients) on the CPU.
        wrap_blocks: Wrap with :class:`VLMBlockPolicy`; off makes the whole model one unit (no memory saving).
        limit_all_gathers: Rate-limit all-gathers (caps peak memory from prefetching).
        forward_prefetch: Prefetch the next unit's all-gather during forward.
        process_group_backend: ``nccl`` / ``gloo``; None picks the device's default.
    """

    _dcp_model_key = "model"

    def __init__(
        self,
        sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"] = "FULL_SHARD",
        state_dict_type: Literal["full", "sharded"] = "full",
        cpu_offload: bool = False,
        wrap_blocks: bool = True,
        limit_all_gathers: bool = True,
        forward_prefetch: bool = False,
        process_group_backend: str | None = None,
    ) -> None:
        super().__init__(
            sharding_strategy=sharding_strategy,
            state_dict_type=state_dict_type,
            cpu_offload=cpu_offload,
            auto_wrap_policy=VLMBlockPolicy() if wrap_blocks else None,
            process_group_backend=process_group_backend,
            limit_all_gathers=limit_all_gathers,
            forward_prefetch=forward_prefetch,
            use_orig_params=True,
        )

    def _setup_model(self, model: nn.Module) -> nn.Module:
        """Wrap the module in FSDP1 (as Lightning does, with the device given as ``torch.device``).

        A module this strategy wrapped before (``trainer.validate`` after ``trainer.fit``) gets its root wrapper back:
        its units are still wrapped, and the root's parameters are still the root wrapper's shards.
        """
        from torch.distributed.fsdp import FullyShardedDataParallel

        previous = getattr(self, "_fsdp_root", None)
        if previous is not None and previous.module is model:
            model = previous
        elif any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            rank_zero_warn("The model is already wrapped in FSDP; VLMFSDPStrategy leaves the wrapping as it is.")
            self.kwargs.pop("auto_wrap_policy", None)
        else:
            model = self._fsdp_root = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=self.root_device,
                **self.kwargs,
            )
        _move_torchmetrics_to_device(model, self.root_device)
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    def _load_partial_sharded(self, path: Path, keys: set[str], weights_only: bool | None) -> dict[str, Any]:
        from torch.distributed.checkpoint import FileSystemReader, load
        from torch.distributed.checkpoint.optimizer import load_sharded_optimizer_state_dict
        from torch.distributed.fsdp import FullyShardedDataParallel

        with _get_sharded_state_dict_context(self.model):
            model_state = {k: v for k, v in self.model.state_dict().items() if k in keys}
            load({self._dcp_model_key: model_state}, checkpoint_id=path)
            self.model.load_state_dict(model_state, strict=False)
            if self.lightning_module.trainer.state.fn == TrainerFn.FITTING:
                reader = FileSystemReader(path=path)
                for idx, optimizer in enumerate(self.optimizers):
                    key = f"optimizer_{idx}"
                    optim_state = load_sharded_optimizer_state_dict(
                        model_state_dict=model_state, optimizer_key=key, storage_reader=reader
                    )
                    flat = FullyShardedDataParallel.optim_state_dict_to_load(
                        optim_state_dict=optim_state[key], model=self.model, optim=optimizer
                    )
                    optimizer.load_state_dict(flat)
        return torch.load(path / _METADATA_FILENAME, weights_only=weights_only)
