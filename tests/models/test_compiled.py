"""Compiled regions: the same loss and gradients as eager, checkpointing included, and unchanged checkpoints.

Most tests compile with the ``aot_eager`` backend: dynamo's graph capture and AOTAutograd's forward / backward split
(where checkpointing, the LoRA dropout masks and their recompute are handled) without inductor's C++ compilation,
which takes a minute or more for the tiny model on a shared 2-core machine; one slow test runs inductor itself.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.models.compiled import FirstStepTimer, compile_regions, compiled_regions, is_compiled
from lightning_mm.placement import Placement

REGIONS = ["vision.model.blocks.0", "vision.model.blocks.1", "vision.model.blocks.2", "llm.model.layers.0",
           "llm.model.layers.1"]  # fmt: skip


def _lora(dropout: float) -> dict[str, Placement]:
    """The recipes' LoRA finetune: frozen tower, projector trained fully, LoRA r=4 on the LLM."""
    lora = Placement("lora", r=4, alpha=8.0, dropout=dropout)
    return {"vision": Placement("frozen"), "projector": Placement("full"), "llm": lora}


def _randomize_lora_b(module: torch.nn.Module) -> None:
    """Non-zero ``lora_B`` (peft starts it at zero, so ``lora_A`` would get no gradient)."""
    gen = torch.Generator().manual_seed(1)
    for name, p in sorted(module.named_parameters()):
        if ".lora_B." in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.02


def _step(module: MultimodalModule, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training-mode forward + token-mean loss + backward, dropout masks from seed 123."""
    module.train()
    module.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    loss_sum, n_items = module.compute_loss(module(batch), batch["labels"])
    loss = loss_sum / n_items
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}


def _assert_same_step(eager, compiled, batch) -> None:
    loss, grads = _step(eager, batch)
    loss_c, grads_c = _step(compiled, batch)
    torch.testing.assert_close(loss_c, loss, rtol=0, atol=1e-5)
    assert grads_c.keys() == grads.keys() and any(".lora_A." in n for n in grads)
    for name, g in grads.items():
        torch.testing.assert_close(grads_c[name], g, rtol=0, atol=1e-4, msg=name)


@pytest.fixture()
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def test_compiled_checkpointed_lora_step_matches_eager(build_module, vqa_batch, fresh_dynamo):
    """LoRA with dropout on the LLM, activation checkpointing on: the dropout masks and their recompute inside the
    compiled decoder layers give the eager step's loss and gradients."""
    eager = build_module(_lora(0.1), activation_checkpointing=True)
    compiled = build_module(_lora(0.1), activation_checkpointing=True)
    for module in (eager, compiled):
        _randomize_lora_b(module)
    assert compile_regions(compiled.network, backend="aot_eager") == REGIONS
    assert all(is_compiled(compiled.network.get_submodule(name)) for name in REGIONS)
    assert compiled_regions(eager.network) == []
    _assert_same_step(eager, compiled, vqa_batch)
    assert counters["stats"]["unique_graphs"] >= 2  # the tower's blocks and the decoder layers ran compiled
    assert not counters["graph_break"], dict(counters["graph_break"])  # checkpointed layers compiled whole
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no `_orig_mod.` in the keys


@pytest.mark.slow
def test_inductor_compiled_decoder_layer_matches_eager(build_module, vqa_batch, fresh_dynamo):
    """The default backend (inductor, C++ kernels), activation checkpointing on: loss 1e-5, gradients 1e-4.

    One decoder layer only (C++ compilation of the others' identical graphs would be reused, the tower's is the
    same machinery), to keep the compile time of the test down."""
    eager = build_module(_lora(0.0), activation_checkpointing=True)
    compiled = build_module(_lora(0.0), activation_checkpointing=True)
    for module in (eager, compiled):
        _randomize_lora_b(module)
    compile_regions(torch.nn.ModuleDict({"vision": torch.nn.Identity(), "projector": torch.nn.Identity(),
                                         "llm": compiled.network.llm}))  # fmt: skip
    _assert_same_step(eager, compiled, vqa_batch)


def test_compile_is_idempotent_keeps_state_dict_keys_and_evaluates_eagerly(build_module, vqa_batch, fresh_dynamo):
    eager, compiled = build_module(_lora(0.0)), build_module(_lora(0.0))
    compile_regions(compiled.network, backend="aot_eager")
    compiled.eval()
    with torch.no_grad():  # evaluation and generation: the blocks' eager call, nothing traced
        torch.testing.assert_close(compiled(vqa_batch), eager.eval()(vqa_batch), rtol=0, atol=0)
    assert counters["frames"]["total"] == 0
    first = compiled.network.get_submodule(REGIONS[0])._compiled_call_impl
    assert compile_regions(compiled.network, backend="aot_eager") == REGIONS
    assert compiled.network.get_submodule(REGIONS[0])._compiled_call_impl is first
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())


def test_first_step_timer_reports_once():
    timer = FirstStepTimer(regions=5)
    timer.start()
    assert timer.stop() is None
    timer.start()
    report = timer.stop()
    assert report.startswith("Compiled regions: 5 modules compiled in place; the first training step took")
    timer.start()
    assert timer.stop() is None


def test_module_compile_switch_trains_checkpoints_and_loads_back(
    quiet_trainer, tmp_path, monkeypatch, caplog, fresh_dynamo
):
    """``compile=True`` under a Trainer: compiled after the placements, reported once, checkpoint keys unchanged.

    Dynamo is off here (``torch.compile`` gives the function back as it is): the lifecycle is under test, the compiled
    step's numbers are above."""
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", compile=True, activation_checkpointing=True, placements={
        "llm": _lora(0.05)["llm"].to_dict()})  # fmt: skip
    data = SyntheticVQADataModule(train_samples=8, val_samples=4, batch_size=4)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, default_root_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        trainer.fit(module, data)
    assert compiled_regions(module.network) == REGIONS
    assert any(".lora_A." in name for name, _ in module.network.llm.named_modules())  # LoRA inside the compiled layers
    assert sum("Compiled regions: 5 modules" in r.getMessage() for r in caplog.records) == 1
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    reference = MultimodalModule(model="tiny", placements=module.hparams.placements)
    reference.configure_model()
    assert set(saved) == set(reference.state_dict())
    loaded = MultimodalModule.load_from_checkpoint(path)
    assert loaded.hparams.compile is True and compiled_regions(loaded.network) == REGIONS
    for name, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0, msg=name)
