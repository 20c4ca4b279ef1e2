"""What ``MultimodalModule.configure_model`` does for the strategy: early errors, then FSDP2 sharding on a mesh."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lightning_mm.distributed.checkpoint import PlacementAwareLoading
from lightning_mm.distributed.fsdp1 import mixed_requires_grad_units
from lightning_mm.distributed.fsdp2 import fully_shard_network, is_fully_sharded, mixed_precision_dtypes

__all__ = ["check_strategy", "evaluate_without_inference_mode", "flattens_parameters", "shard_for_strategy"]


def flattens_parameters(strategy: Any) -> bool:
    """Whether the strategy is FSDP1, whose wrapping turns the original parameters into flat 1-D views."""
    return isinstance(strategy, FSDPStrategy)


def evaluate_without_inference_mode(trainer: Any) -> None:
    """Make ``trainer.validate`` / ``test`` / ``predict`` run under ``no_grad`` instead of ``torch.inference_mode``.

    (Validation inside ``fit`` already does.) FSDP2 creates its gathered parameters once; created under
    ``inference_mode`` they stay inference tensors, and a later ``fit`` fails in backward.
    """
    for loop in (trainer.validate_loop, trainer.test_loop, trainer.predict_loop, trainer.fit_loop.epoch_loop.val_loop):
        loop.inference_mode = False


def _tensor_parallel_size(strategy: ModelParallelStrategy) -> int:
    mesh = strategy.device_mesh
    names = mesh.mesh_dim_names or ()
    return mesh["tensor_parallel"].size() if "tensor_parallel" in names else 1


def check_strategy(module: Any, trainer: Any) -> None:
    """Raise early, with the fix, for strategy settings that cannot train a :class:`~lightning_mm.MultimodalModule`.

    Checked (after the placements are applied, before anything is wrapped):

    * ``ModelParallelStrategy`` with a tensor-parallel dimension > 1: the module only shards with FSDP2, and every
      rank of a tensor-parallel group would get the same batches.
    * ``ModelParallelStrategy`` with fp16 mixed precision (no sharded gradient scaler): use bf16.
    * ``FSDPStrategy`` without ``use_orig_params=True``: per-component optimiser groups and units holding frozen and
      trainable parameters (LoRA) need it.
    * ``FSDPStrategy`` with its own activation checkpointing while the module checkpoints too.
    * Adapter-only checkpoints under a Lightning sharding strategy that cannot resume them (use the project's).

    A plain ``FSDPStrategy`` without a wrap policy only gets a warning (it works, as one unit).

    Raises:
        ValueError: for the combinations above.
    """
    strategy = trainer.strategy
    name = type(strategy).__name__
    if isinstance(strategy, ModelParallelStrategy):
        tp = _tensor_parallel_size(strategy)
        if tp > 1:
            raise ValueError(
                f"{name} was set up with a tensor-parallel size of {tp}, but MultimodalModule shards with FSDP2 only, "
                "so the ranks of a tensor-parallel group would train on the same batches. Use "
                "ModelParallelStrategy(data_parallel_size=<devices x nodes>, tensor_parallel_size=1) or "
                "lightning_mm.distributed.VLMModelParallelStrategy."
            )
        if str(trainer.precision).startswith("16"):
            raise ValueError(
                f"precision={trainer.precision!r} needs a gradient scaler for sharded gradients, which {name} does "
                "not provide: use 'bf16-mixed' or 'bf16-true'."
            )
    if isinstance(strategy, FSDPStrategy):
        if not strategy.kwargs.get("use_orig_params", False):
            mixed = mixed_requires_grad_units(module.network)
            detail = f" Units holding frozen and trainable parameters: {', '.join(sorted(mixed))}." if mixed else ""
            raise ValueError(
                f"{name} needs use_orig_params=True for MultimodalModule: its optimiser groups hold the original "
                "parameters per component, and FSDP1 without it flattens every unit into one parameter that must be "
                f"all frozen or all trainable (LoRA never is).{detail} Use lightning_mm.distributed.VLMFSDPStrategy."
            )
        if module.activation_checkpointing and strategy._activation_checkpointing_kwargs:
            raise ValueError(
                f"Both {name}(activation_checkpointing_policy=...) and MultimodalModule(activation_checkpointing=True) "
                "are set: the layers would be recomputed twice. Keep the module's."
            )
        if strategy.kwargs.get("auto_wrap_policy") is None:
            rank_zero_warn(
                f"{name} has no auto_wrap_policy: the whole model is one FSDP unit, gathered at once (no memory "
                "saving over DDP). Use lightning_mm.distributed.VLMFSDPStrategy or auto_wrap_policy=VLMBlockPolicy()."
            )
    sharded = isinstance(strategy, FSDPStrategy | ModelParallelStrategy)
    if module.adapter_only_checkpoints and sharded and not isinstance(strategy, PlacementAwareLoading):
        raise ValueError(
            f"Adapter-only checkpoints cannot be resumed under {name}: it loads the weights into the sharded model "
            "before the module can complete the missing frozen base. Use lightning_mm.distributed.VLMFSDPStrategy "
            "or VLMModelParallelStrategy."
        )


def shard_for_strategy(module: Any) -> None:
    """Apply FSDP2 to ``module.network`` when the strategy gave the module a device mesh (once).

    The network is sharded on the mesh's ``data_parallel`` dimension, with bf16 all-gathers for ``bf16-mixed``
    (:func:`~lightning_mm.distributed.mixed_precision_dtypes`) and the strategy's ``reshard_after_forward`` if it has
    one (:class:`~lightning_mm.distributed.VLMModelParallelStrategy`).
    """
    mesh = module.device_mesh
    if mesh is None or is_fully_sharded(module.network):
        return
    names = mesh.mesh_dim_names or ()
    dp_mesh = mesh["data_parallel"] if "data_parallel" in names else mesh
    trainer = module.trainer
    param_dtype, reduce_dtype = mixed_precision_dtypes(trainer.precision)
    fully_shard_network(
        module.network,
        dp_mesh,
        param_dtype=param_dtype,
        reduce_dtype=reduce_dtype,
        reshard_after_forward=getattr(trainer.strategy, "reshard_after_forward", True),
    )
