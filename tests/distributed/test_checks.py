"""Early, clear errors for strategy settings that cannot train a MultimodalModule, and resume-time checks."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import AdapterOnlyCheckpoint, Placement
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.distributed import (
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


def _module(activation_checkpointing: bool = False) -> MultimodalModule:
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", activation_checkpointing=activation_checkpointing)
    module.set_placement("vision", Placement("frozen"))
    module.set_placement("llm", Placement("lora", r=2))
    module.configure_model()
    return module


def _trainer(
    strategy, precision: str = "32-true", mesh: _Mesh | None = None, adapter_only: bool = False
) -> SimpleNamespace:
    if mesh is not None:
        strategy._device_mesh = mesh
    callbacks = [AdapterOnlyCheckpoint()] if adapter_only else []
    return SimpleNamespace(strategy=strategy, precision=precision, callbacks=callbacks)


def test_model_parallel_with_tensor_parallelism_is_refused():
    with pytest.raises(ValueError, match="tensor-parallel size of 2.*tensor_parallel_size=1"):
        check_strategy(_module(), _trainer(ModelParallelStrategy(), mesh=_Mesh(1, 2)))
    check_strategy(_module(), _trainer(ModelParallelStrategy(), mesh=_Mesh(2, 1)))


def test_fp16_under_fsdp2_is_refused():
    with pytest.raises(ValueError, match="bf16-mixed"):
        check_strategy(_module(), _trainer(VLMModelParallelStrategy(), "16-mixed", _Mesh(2, 1)))
    check_strategy(_module(), _trainer(VLMModelParallelStrategy(), "bf16-mixed", _Mesh(2, 1)))


def test_adapter_only_checkpoints_need_the_project_strategies():
    with pytest.raises(ValueError, match="Adapter-only checkpoints cannot be resumed"):
        check_strategy(_module(), _trainer(ModelParallelStrategy(), mesh=_Mesh(2, 1), adapter_only=True))
    check_strategy(_module(), _trainer(VLMModelParallelStrategy(), mesh=_Mesh(2, 1), adapter_only=True))
    check_strategy(_module(), _trainer(ModelParallelStrategy(), mesh=_Mesh(2, 1)))  # whole checkpoints resume


def test_the_adapter_only_callback_leaves_the_module_as_it_was(tmp_path):
    module = _module()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[AdapterOnlyCheckpoint()],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, SyntheticVQADataModule(train_samples=2, batch_size=2))
    trainer.save_checkpoint(tmp_path / "adapters.ckpt")
    later = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, default_root_dir=tmp_path)
    later.strategy.connect(module)
    later.save_checkpoint(tmp_path / "whole.ckpt")
    adapters = torch.load(tmp_path / "adapters.ckpt", weights_only=True)
    whole = torch.load(tmp_path / "whole.ckpt", weights_only=True)
    assert adapters["lightning_mm"]["adapter_only"] and not whole["lightning_mm"]["adapter_only"]
    assert whole["state_dict"].keys() == module.state_dict().keys() != adapters["state_dict"].keys()


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


@pytest.mark.parametrize("strategy", [VLMModelParallelStrategy])
def test_resuming_from_a_truncated_checkpoint_names_the_file(strategy, tmp_path):
    """``Trainer.fit(ckpt_path=...)`` from Python under the project's strategy (the CLI checks before it starts)."""
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
