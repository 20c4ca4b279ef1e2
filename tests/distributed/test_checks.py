"""Early, clear errors for strategy settings that cannot train a MultimodalModule, and resume-time checks."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import Placement
from lightning_mm.distributed import (
    VLMFSDPStrategy,
    VLMModelParallelStrategy,
    check_placements,
    check_strategy,
    evaluate_without_inference_mode,
    mixed_precision_dtypes,
)
from lightning_mm.distributed.checkpoint import check_adapter_only_keys


class _Mesh:
    """Stands for a (data_parallel, tensor_parallel) DeviceMesh."""

    mesh_dim_names = ("data_parallel", "tensor_parallel")

    def __init__(self, dp: int, tp: int) -> None:
        self.sizes = {"data_parallel": dp, "tensor_parallel": tp}

    def __getitem__(self, name: str):
        return SimpleNamespace(size=lambda: self.sizes[name])


def _module(activation_checkpointing: bool = False, adapter_only: bool = False) -> MultimodalModule:
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", activation_checkpointing=activation_checkpointing)
    module.set_placement("vision", Placement("frozen"))
    module.set_placement("llm", Placement("lora", r=2))
    module.configure_model()
    module.adapter_only_checkpoints = adapter_only
    return module


def _trainer(strategy, precision: str = "32-true", mesh: _Mesh | None = None) -> SimpleNamespace:
    if mesh is not None:
        strategy._device_mesh = mesh
    return SimpleNamespace(strategy=strategy, precision=precision)


def test_model_parallel_with_tensor_parallelism_is_refused():
    with pytest.raises(ValueError, match="tensor-parallel size of 2.*tensor_parallel_size=1"):
        check_strategy(_module(), _trainer(ModelParallelStrategy(), mesh=_Mesh(1, 2)))
    check_strategy(_module(), _trainer(ModelParallelStrategy(), mesh=_Mesh(2, 1)))


def test_fp16_under_fsdp2_is_refused():
    with pytest.raises(ValueError, match="bf16-mixed"):
        check_strategy(_module(), _trainer(VLMModelParallelStrategy(), "16-mixed", _Mesh(2, 1)))
    check_strategy(_module(), _trainer(VLMModelParallelStrategy(), "bf16-mixed", _Mesh(2, 1)))


def test_fsdp1_without_orig_params_is_refused_naming_the_mixed_units():
    with pytest.raises(ValueError, match=r"use_orig_params=True.*llm\.model\.layers\.0, llm\.model\.layers\.1"):
        check_strategy(_module(), _trainer(FSDPStrategy(use_orig_params=False)))


@pytest.mark.filterwarnings("ignore:FSDPStrategy has no auto_wrap_policy")
def test_fsdp1_checkpointing_twice_is_refused():
    strategy = FSDPStrategy(activation_checkpointing_policy={LlamaDecoderLayer})
    with pytest.raises(ValueError, match="recomputed twice"):
        check_strategy(_module(activation_checkpointing=True), _trainer(strategy))
    check_strategy(_module(activation_checkpointing=False), _trainer(strategy))


def test_fsdp1_without_wrap_policy_warns():
    with pytest.warns(UserWarning, match="whole model is one FSDP unit"):
        check_strategy(_module(), _trainer(FSDPStrategy()))


@pytest.mark.filterwarnings("ignore:FSDPStrategy has no auto_wrap_policy")
@pytest.mark.parametrize("strategy", [FSDPStrategy, ModelParallelStrategy])
def test_adapter_only_checkpoints_need_the_project_strategies(strategy):
    mesh = _Mesh(2, 1) if strategy is ModelParallelStrategy else None
    with pytest.raises(ValueError, match="Adapter-only checkpoints cannot be resumed"):
        check_strategy(_module(adapter_only=True), _trainer(strategy(), mesh=mesh))
    ours = VLMModelParallelStrategy() if mesh else VLMFSDPStrategy()
    check_strategy(_module(adapter_only=True), _trainer(ours, mesh=mesh))


def test_resume_needs_the_checkpoints_placements():
    module = _module()
    saved = {c: p.to_dict() for c, p in module.placements.items()}
    check_placements(module, saved)
    other = {**saved, "llm": Placement("lora", r=8, alpha=16).to_dict()}
    with pytest.raises(ValueError, match=r"trained the llm as 'lora r=8 a=16'.*LoRAComponent\('llm', r=8, alpha=16"):
        check_placements(module, other)
    with pytest.raises(ValueError, match=r"trained the projector as 'frozen'.*FreezeComponent\('projector'\)"):
        check_placements(module, {**saved, "projector": Placement("frozen").to_dict()})
    check_placements(module, {**saved, "projector": Placement("full").to_dict()})  # undeclared means full


def test_adapter_only_checkpoint_must_hold_every_trained_parameter():
    module = _module()
    trained = {n for n, p in module.named_parameters() if p.requires_grad}
    check_adapter_only_keys(module, trained)
    with pytest.raises(ValueError, match="lacks 1 parameters"):
        check_adapter_only_keys(module, trained - {sorted(trained)[0]})


def test_bf16_mixed_gathers_in_bf16_and_reduces_in_float32():
    assert mixed_precision_dtypes("bf16-mixed") == (torch.bfloat16, torch.float32)
    assert mixed_precision_dtypes("bf16-true") == (None, None) == mixed_precision_dtypes("32-true")


def test_fsdp2_evaluation_runs_without_inference_mode():
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy=VLMModelParallelStrategy(), logger=False)
    loops = [trainer.validate_loop, trainer.test_loop, trainer.predict_loop]
    assert all(loop.inference_mode for loop in loops)  # Lightning's default
    evaluate_without_inference_mode(trainer)
    assert not any(loop.inference_mode for loop in [*loops, trainer.fit_loop.epoch_loop.val_loop])


@pytest.mark.parametrize("strategy", [VLMFSDPStrategy, VLMModelParallelStrategy])
def test_resuming_from_a_truncated_checkpoint_names_the_file(strategy, tmp_path):
    """``Trainer.fit(ckpt_path=...)`` from Python under the project's strategies (the CLI checks before it starts)."""
    from lightning_mm.data import SyntheticVQADataModule

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, path)
    path.write_bytes(path.read_bytes()[:1000])
    trainer = L.Trainer(
        accelerator="cpu", devices=1, strategy=strategy(), logger=False, max_steps=1, enable_checkpointing=False
    )
    with pytest.raises(ValueError, match=f"Checkpoint {path} is truncated"):
        trainer.fit(
            MultimodalModule(model="tiny"), SyntheticVQADataModule(train_samples=4, batch_size=2), ckpt_path=path
        )
