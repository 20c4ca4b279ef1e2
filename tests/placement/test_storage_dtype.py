"""Frozen storage dtype: frozen weights in the compute dtype, trainable ones float32, through training and checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import AdapterOnlyCheckpoint
from lightning_mm.errors import ConfigError
from lightning_mm.placement import Placement, apply_placements, merge_lora, storage_dtype_for_precision
from tests.placement.conftest import lora_placements, randomize_lora_b, step


def _dtypes(module: torch.nn.Module, trainable: bool) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters() if p.requires_grad == trainable and p.is_floating_point()}


def test_precision_sets_the_default():
    assert storage_dtype_for_precision("bf16-mixed") == torch.bfloat16
    assert storage_dtype_for_precision("16-mixed") == torch.float16
    assert storage_dtype_for_precision("32-true") is None
    assert storage_dtype_for_precision("bf16-true") is None  # Lightning converts the whole module itself
    assert storage_dtype_for_precision(None) is None


def test_bf16_mixed_stores_frozen_weights_in_bf16_and_keeps_float32_masters(fit_placed, tmp_path):
    placements = {"vision": Placement("frozen"), "projector": Placement("full"), "llm": Placement("lora", r=4)}
    module, trainer, losses = fit_placed(tmp_path, placements, precision="bf16-mixed")
    net = module.network
    assert _dtypes(net, trainable=False) == {torch.bfloat16}
    assert _dtypes(net, trainable=True) == {torch.float32}
    state = trainer.optimizers[0].state
    assert state and {s["exp_avg"].dtype for s in state.values()} == {torch.float32}
    assert net.llm.lm_head.weight is net.llm.model.embed_tokens.weight  # tied weights stay tied
    assert all(torch.isfinite(torch.tensor(losses)))


def test_full_precision_keeps_float32_and_a_placement_overrides_the_default(fit_placed, tmp_path):
    module, _, _ = fit_placed(tmp_path / "a", {"llm": Placement("lora", r=4)}, precision="32-true")
    assert _dtypes(module.network, trainable=False) == {torch.float32}
    placements = {"vision": Placement("frozen", storage_dtype="float32"), "llm": Placement("lora", r=4)}
    module, _, _ = fit_placed(tmp_path / "b", placements, precision="bf16-mixed")
    assert _dtypes(module.network.vision, trainable=False) == {torch.float32}
    assert _dtypes(module.network.llm, trainable=False) == {torch.bfloat16}


def test_half_storage_without_autocast_is_refused(fit_placed, tmp_path):
    placements = {"llm": Placement("lora", r=4, storage_dtype="bfloat16")}
    with pytest.raises(ConfigError, match=r"storage_dtype='bfloat16' of the llm needs autocast.*'32-true'"):
        fit_placed(tmp_path, placements, precision="32-true")


def test_unknown_storage_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match=r"Unknown storage_dtype 'bfloat'.*Did you mean 'bfloat16'"):
        Placement("lora", storage_dtype="bfloat")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_bf16_frozen_loss_and_gradients_match_float32_frozen_within_bf16_tolerance(
    build_module, vqa_batch, checkpointing
):
    """Same weights, same autocast: only the frozen weights' storage differs (float32 is cast at every use)."""
    ref = build_module(lora_placements(storage_dtype="float32"), activation_checkpointing=checkpointing)
    half = build_module(lora_placements(storage_dtype="bfloat16"), activation_checkpointing=checkpointing)
    randomize_lora_b(ref)
    randomize_lora_b(half)
    assert _dtypes(half.network.llm, trainable=False) == {torch.bfloat16}
    loss_ref, grads_ref = step(ref, vqa_batch)
    loss_half, grads_half = step(half, vqa_batch)
    torch.testing.assert_close(loss_half, loss_ref, rtol=1e-2, atol=0)  # bf16: 8 bits of mantissa
    for name, g in grads_ref.items():
        cos = torch.nn.functional.cosine_similarity(grads_half[name].flatten(), g.flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))


def test_activation_checkpointing_recomputes_the_same_bf16_step(build_module, vqa_batch):
    plain = build_module(lora_placements(storage_dtype="bfloat16"))
    ckpt = build_module(lora_placements(storage_dtype="bfloat16"), activation_checkpointing=True)
    randomize_lora_b(plain)
    randomize_lora_b(ckpt)
    loss_a, grads_a = step(plain, vqa_batch)
    loss_b, grads_b = step(ckpt, vqa_batch)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-5, atol=1e-7)


def test_storage_cast_is_idempotent_and_keeps_parameters(build_module):
    module = build_module(lora_placements())
    before = {n: p for n, p in module.network.named_parameters()}
    apply_placements(module.network, module.placements, torch.bfloat16)
    apply_placements(module.network, module.placements, torch.bfloat16)
    after = dict(module.network.named_parameters())
    assert all(after[n] is p for n, p in before.items())  # same Parameter objects: optimiser and ties unaffected
    assert _dtypes(module.network, trainable=False) == {torch.bfloat16}


def test_merge_of_a_bf16_frozen_base_is_done_in_float32(build_module):
    module = build_module({"llm": Placement("lora", r=4, alpha=8.0, storage_dtype="bfloat16")})
    randomize_lora_b(module)
    layer = module.network.llm.model.layers[0].self_attn.q_proj
    base = layer.base_layer.weight.detach().float()  # (out, in) bf16 values, exactly
    delta = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).detach() * (8.0 / 4)  # (out, in)
    merge_lora(module.network.llm)
    merged = module.network.llm.model.layers[0].self_attn.q_proj.weight
    assert {p.dtype for p in module.network.llm.parameters()} == {torch.float32}
    torch.testing.assert_close(merged, base + delta, rtol=0, atol=1e-7)


def test_adapter_only_checkpoint_of_a_bf16_run_reloads_on_its_base_and_resumes(fit_placed, tmp_path):
    placements = lora_placements()
    module, trainer, _ = fit_placed(tmp_path, placements, callbacks=[AdapterOnlyCheckpoint()])
    path = tmp_path / "adapters.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    assert not frozen & set(saved["state_dict"])
    L.seed_everything(0, verbose=False)  # the run's seed rebuilds its random base
    loaded = MultimodalModule.load_from_checkpoint(path)  # no trainer: the base is rebuilt in float32
    assert loaded.base_mismatch == []  # the fingerprint rounds the bf16-stored base and its float32 rebuild alike
    for name, p in module.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(dict(loaded.named_parameters())[name], p, rtol=0, atol=0)
    resumed, trainer2, losses = fit_placed(
        tmp_path / "resumed", placements, max_epochs=2, callbacks=[AdapterOnlyCheckpoint()], ckpt_path=path
    )
    assert trainer2.global_step == 4 and len(losses) == 2
    assert _dtypes(resumed.network, trainable=False) == {torch.bfloat16}
