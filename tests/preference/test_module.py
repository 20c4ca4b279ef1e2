"""PreferenceModule: the tower once per pair, the reference for free under LoRA, pair-exact accumulation."""

from __future__ import annotations

import pytest
import torch

from lightning_mm.placement import Placement
from lightning_mm.placement.lora import is_lora_parameter
from lightning_mm.preference import PreferenceModule, SyntheticPreferenceDataModule
from lightning_mm.preference.forward import pair_hidden

LORA = {"vision": Placement("lora", r=4), "projector": Placement("lora", r=4), "llm": Placement("lora", r=4)}


def _module(placements: dict | None = None, **kwargs) -> PreferenceModule:
    torch.manual_seed(0)
    module = PreferenceModule(model="tiny", **kwargs)
    for component, placement in (placements or {}).items():
        module.set_placement(component, placement)
    module.configure_model()
    return module


def _batch(module: PreferenceModule, pairs: int = 3) -> dict:
    dm = SyntheticPreferenceDataModule(train_samples=pairs, val_samples=pairs, batch_size=pairs)
    dm.bind(module.data_contract)
    return next(iter(dm.val_dataloader()))


def test_tower_runs_once_per_pair_and_hidden_states_match_the_network():
    module = _module()
    module.network.eval()
    batch = _batch(module)
    images_seen = []
    hook = module.network.vision.register_forward_hook(lambda m, args, out: images_seen.append(args[0].shape[0]))
    with torch.no_grad():
        hidden = pair_hidden(module.network, batch)  # (2P, T, H)
        rows = {**batch, "pixel_values": torch.cat([batch["pixel_values"]] * 2)}  # every row its own image
        expected = module(rows)
    hook.remove()
    assert images_seen == [3, 6]  # pairs: 3 images for 6 rows; the plain forward: 6
    torch.testing.assert_close(hidden, expected, rtol=0, atol=0)


def test_lora_reference_equals_a_frozen_copy_exactly():
    module = _module(LORA, reference="copy")  # the copy is taken before the adapters go in
    with torch.no_grad():  # trained adapters: the policy is no longer the base
        for name, p in module.network.named_parameters():
            if is_lora_parameter(name) and "lora_B" in name:
                p.normal_(0, 0.5)
    batch = _batch(module)
    from_copy, counts = module.reference_logprobs(batch)
    module.reference = "adapters"
    from_adapters, _ = module.reference_logprobs(batch)
    torch.testing.assert_close(from_adapters, from_copy, rtol=0, atol=0)
    policy, _ = module.answer_logprobs(module.network, pair_hidden(module.network, batch), batch["labels"])
    assert (policy - from_copy).abs().max() > 1e-3  # the adapters were really on, and were really switched off
    assert all(not layer._disable_adapters for layer in module.network.modules() if hasattr(layer, "_disable_adapters"))
    assert counts.min() > 0


def test_auto_reference_is_adapters_under_lora_and_needs_a_frozen_base():
    module = _module(LORA)
    assert module.reference_kind() == "adapters" and module._reference_copy is None
    module.check_reference()
    full = _module({**LORA, "projector": Placement("full")})
    with pytest.raises(ValueError, match=r"base parameter\(s\) train \(first: 'projector\."):
        full.check_reference()
    assert _module().reference_kind() == "copy"
    assert _module(loss_type="simpo").reference_kind() == "none"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="loss_type must be one of"):
        PreferenceModule(loss_type="kto")
    with pytest.raises(ValueError, match="reference must be one of"):
        PreferenceModule(reference="ema")
    with pytest.raises(ValueError, match="beta must be > 0"):
        PreferenceModule(beta=0.0)


@pytest.mark.slow
def test_accumulated_gradient_is_the_mean_over_all_pairs(quiet_trainer):
    """Micro-batches of 3 and 2 pairs accumulated: the step's gradient is that of the 5 pairs' mean."""
    grads = {}

    class Recording(PreferenceModule):
        def on_before_optimizer_step(self, optimizer):
            super().on_before_optimizer_step(optimizer)
            grads.update({n: p.grad.clone() for n, p in self.network.named_parameters() if p.grad is not None})

    torch.manual_seed(0)
    module = Recording(model="tiny", reference="copy", optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    dm = SyntheticPreferenceDataModule(train_samples=5, val_samples=2, batch_size=3)
    quiet_trainer(max_steps=1, accumulate_grad_batches=2, limit_val_batches=0).fit(module, dm)

    module.network.zero_grad()
    module.log = lambda *args, **kwargs: None
    dm_all = SyntheticPreferenceDataModule(train_samples=5, val_samples=2, batch_size=5)
    dm_all.bind(module.data_contract)
    module.pair_loss(next(iter(dm_all.train_dataloader()))).losses.mean().backward()
    assert len(grads) > 20
    for name, p in module.network.named_parameters():
        if name in grads:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_reference_logprobs_cached_in_the_batch_are_used():
    module = _module(reference="copy")
    batch = _batch(module, pairs=2)
    with torch.no_grad():
        computed = module.pair_loss(batch).losses
        ref, _ = module.reference_logprobs(batch)
        cached = module.pair_loss({**batch, "ref_chosen_logps": ref[:2], "ref_rejected_logps": ref[2:]}).losses
        shifted = module.pair_loss({**batch, "ref_chosen_logps": ref[:2] + 1.0, "ref_rejected_logps": ref[2:]}).losses
    torch.testing.assert_close(cached, computed, rtol=0, atol=0)
    assert (shifted - computed).abs().min() > 1e-4
