"""What ``MultimodalModule.configure_model`` does for the strategy: early errors, then FSDP2 sharding on a mesh."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from lightning_mm.distributed.checkpoint import PlacementAwareLoading
from lightning_mm.distributed.fsdp1 import FSDP1_REMOVED
from lightning_mm.distributed.fsdp2 import fully_shard_network, is_fully_sharded, mixed_precision_dtypes

__all__ = ["check_strategy", "evaluate_without_inference_mode", "shard_for_strategy"]


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

    Checked (after the placements are applied, before anything is sharded):

    * ``FSDPStrategy`` (FSDP1): not supported, use :class:`~lightning_mm.distributed.VLMModelParallelStrategy`.
    * ``ModelParallelStrategy`` with a tensor-parallel dimension > 1: the module only shards with FSDP2, and every
      rank of a tensor-parallel group would get the same batches.
    * ``ModelParallelStrategy`` with fp16 mixed precision (no sharded gradient scaler): use bf16.
    * Adapter-only checkpoints (a callback of the trainer with ``adapter_only = True``, as
      :class:`~lightning_mm.callbacks.AdapterOnlyCheckpoint`) under a Lightning sharding strategy that cannot resume
      them (use the project's).

    Raises:
        ValueError: for the combinations above.
    """
    strategy = trainer.strategy
    name = type(strategy).__name__
    if isinstance(strategy, FSDPStrategy):
        raise ValueError(f"{name}: {FSDP1_REMOVED}")
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
        adapter_only = any(getattr(cb, "adapter_only", False) for cb in getattr(trainer, "callbacks", ()))
        if adapter_only and not isinstance(strategy, PlacementAwareLoading):
            raise ValueError(
                f"Adapter-only checkpoints cannot be resumed under {name}: it loads the weights into the sharded "
                "model before the module can complete the missing frozen base. Use "
                "lightning_mm.distributed.VLMModelParallelStrategy."
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
