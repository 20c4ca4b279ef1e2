"""VLMModelParallelStrategy: Lightning's ``ModelParallelStrategy`` set up for FSDP2 data parallelism (no TP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.fabric.utilities.load import _METADATA_FILENAME
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.distributed.checkpoint import load
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from lightning_mm.distributed.checkpoint import PlacementAwareLoading
from lightning_mm.distributed.setup import evaluate_without_inference_mode

__all__ = ["VLMModelParallelStrategy"]


class VLMModelParallelStrategy(PlacementAwareLoading, ModelParallelStrategy):
    """FSDP2 over every device of the run: Lightning's ``ModelParallelStrategy`` with a pure data-parallel mesh.

    ``MultimodalModule.configure_model`` shards the network on the mesh's ``data_parallel`` dimension (each vision
    block, the projector, each LLM decoder layer, then the root). Lightning's own strategy works too when given
    ``data_parallel_size=<devices x nodes>, tensor_parallel_size=1``; this one sets that up by default, adds the
    resume checks and adapter-only loading of :class:`~lightning_mm.distributed.PlacementAwareLoading`, the
    ``reshard_after_forward`` switch, and evaluates under ``no_grad`` instead of ``inference_mode``: FSDP2 parameters
    first gathered under ``inference_mode`` (``trainer.validate`` or ``predict`` before ``fit``) are inference
    tensors, which training can no longer use.

    Args:
        data_parallel_size: Devices the model is sharded over; ``auto``: every device of every node.
        save_distributed_checkpoint: True: a checkpoint is a folder with one shard per rank (fast, resumable at the
            same or another world size); False: the full state is gathered on rank 0 into one file.
        reshard_after_forward: Free each unit's gathered parameters after its forward (ZeRO-3); False keeps them
            until backward (more memory, fewer all-gathers).
        process_group_backend: ``nccl`` / ``gloo``; None picks the device's default.
    """

    def __init__(
        self,
        data_parallel_size: int | Literal["auto"] = "auto",
        save_distributed_checkpoint: bool = True,
        reshard_after_forward: bool = True,
        process_group_backend: str | None = None,
    ) -> None:
        super().__init__(
            data_parallel_size=data_parallel_size,
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
        )
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def setup(self, trainer: Any) -> None:
        evaluate_without_inference_mode(trainer)
        super().setup(trainer)

    def _load_partial_sharded(self, path: Path, keys: set[str], weights_only: bool | None) -> dict[str, Any]:
        model_state = {k: v for k, v in get_model_state_dict(self.model).items() if k in keys}
        load({self._dcp_model_key: model_state}, checkpoint_id=path)
        set_model_state_dict(self.model, model_state, options=StateDictOptions(strict=False))
        if self.lightning_module.trainer.state.fn == TrainerFn.FITTING:
            for idx, optimizer in enumerate(self.optimizers):
                key = f"optimizer_{idx}"
                optim_state = {key: get_optimizer_state_dict(self.model, optimizer)}
                load(optim_state, checkpoint_id=path)
                options = StateDictOptions(cpu_offload=True)
                set_optimizer_state_dict(self.model, optimizer, optim_state_dict=optim_state[key], options=options)
        return torch.load(path / _METADATA_FILENAME, weights_only=weights_only)
