"""FSDP2: ``fully_shard`` the network unit by unit in ``configure_model``, and use the root's weights outside forward.

Lightning's ``ModelParallelStrategy`` hands the module a device mesh and leaves the sharding to
``configure_model``; :class:`~lightning_mm.MultimodalModule` calls :func:`fully_shard_network` there, after the
placements (LoRA adapters included) and activation checkpointing are applied, so the adapters are sharded with their
layer. FSDP2 shards parameter by parameter, so frozen and trainable parameters may share a unit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lightning_mm.distributed.units import shard_units

try:
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
    from torch.distributed.tensor import DTensor
except ImportError:  # torch 2.5
    from torch.distributed._composable.fsdp import (
        FSDPModule,
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )
    from torch.distributed._tensor import DTensor

# methods of the network that use the root's parameters outside ``forward`` (generation, the loss on lm_head)
FORWARD_METHODS = ("generate", "lm_loss", "target_predictions")

__all__ = ["fsdp_owner", "fully_shard_network", "is_fully_sharded", "mixed_precision_dtypes", "unsharded"]


def is_fully_sharded(module: nn.Module) -> bool:
    """Whether ``module`` is an FSDP2 (``fully_shard``) module."""
    return isinstance(module, FSDPModule)


def mixed_precision_dtypes(precision: str | None) -> tuple[torch.dtype | None, torch.dtype | None]:
    """(parameter, reduction) dtypes of FSDP2's mixed-precision policy for a Lightning ``precision`` setting.

    ``bf16-mixed`` all-gathers and computes in bfloat16 and reduces gradients in float32 (the sharded parameters and
    the optimiser stay float32); every other setting keeps the parameters' own dtype.
    """
    if precision is not None and str(precision).startswith("bf16-mixed"):
        return torch.bfloat16, torch.float32
    return None, None


def _output_not_a_view(module: nn.Module, args: tuple, output: object) -> object:
    # A unit ending in a Linear on (N, L, D) input (the projector) returns a view; FSDP2 warns about views because an
    # in-place op on one would skip the unit's pre-backward hook. A copy of the projector's output costs little.
    if isinstance(output, torch.Tensor) and output._base is not None:
        return output.clone()
    return output


def fully_shard_network(
    network: nn.Module,
    mesh,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Apply FSDP2 to every unit of :func:`~lightning_mm.distributed.shard_units`, then to ``network`` as the root.

    The root (embeddings, ``lm_head``, final norms, the tower's patch embedding) keeps its parameters unsharded from
    its forward until its backward (FSDP2's default for a root), which is what lets the loss read ``lm_head.weight``
    after ``network(...)`` returns. The network's ``generate``, ``lm_loss`` and ``target_predictions`` are registered
    as forward methods (:data:`FORWARD_METHODS`), so they gather the root too; :func:`unsharded` covers other calls.

    Args:
        network: The :class:`~lightning_mm.models.VisionLanguageModel`, placements and activation checkpointing
            already applied.
        mesh: 1-D data-parallel ``DeviceMesh`` (a 2-D mesh gives HSDP: replicate on dim 0, shard on dim 1).
        param_dtype: Dtype of the unsharded parameters (all-gather and compute); None keeps theirs.
        reduce_dtype: Dtype of the gradient reduce-scatter; None follows ``param_dtype``.
        reshard_after_forward: Free each unit's unsharded parameters after its forward and all-gather them again in
            backward (ZeRO-3); False keeps them until backward (more memory, one all-gather less per unit).

    Returns:
        ``network``, sharded in place (its class becomes an ``FSDP...`` subclass of its own).
    """
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for unit in shard_units(network).values():
        unit.register_forward_hook(_output_not_a_view)  # runs before FSDP2's own post-forward hook
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(network, mesh=mesh, mp_policy=policy)  # root: reshard_after_forward=None keeps it until backward
    for name in FORWARD_METHODS:  # they gather the root like forward does
        if callable(getattr(network, name, None)):
            register_fsdp_forward_method(network, name)
    return network


def fsdp_owner(root: nn.Module, module: nn.Module) -> nn.Module | None:
    """The innermost FSDP2 module on the path from ``root`` to ``module`` (the unit that owns its parameters)."""
    path = next((name for name, m in root.named_modules(remove_duplicate=False) if m is module), None)
    if path is None:
        raise ValueError(f"{type(module).__name__} is not a submodule of {type(root).__name__}")
    owner = root if is_fully_sharded(root) else None
    current = root
    for part in path.split(".") if path else []:
        current = current.get_submodule(part)
        if is_fully_sharded(current):
            owner = current
    return owner


def _is_dtensor(t: torch.Tensor) -> bool:
    return isinstance(t, DTensor)


@contextmanager
def unsharded(root: nn.Module, module: nn.Module) -> Iterator[None]:
    """Make ``module``'s own parameters plain (all-gathered) tensors while the block runs.

    Nothing happens when they already are: no FSDP2, or right after the root's forward (the root keeps its parameters
    until its backward). Otherwise the owning unit is all-gathered; outside autograd it is resharded on exit, in
    training it stays unsharded until FSDP2's post-backward, which reduces the gradients of those plain tensors.

    Args:
        root: The module ``fully_shard`` was applied to last (the network).
        module: A submodule whose parameters are used outside its own ``forward`` (``lm_head``).
    """
    if not any(_is_dtensor(p) for p in module.parameters(recurse=False)):
        yield
        return
    owner = fsdp_owner(root, module)
    if owner is None:
        raise RuntimeError(
            f"The parameters of {type(module).__name__} are DTensors but no fully_shard module owns them (tensor "
            "parallelism?): the loss cannot gather them."
        )
    owner.unshard()
    try:
        yield
    finally:
        if not torch.is_grad_enabled():
            owner.reshard()
