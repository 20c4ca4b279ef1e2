"""Our DPO loss and its gradients against TRL's DPOTrainer loss, on the same tiny VLM and batch (float64).

TRL's ``DPOTrainer._compute_loss`` runs unchanged on a stand-in trainer (the attributes it reads) and a model whose
forward is TRL's fused LM head (``add_fused_lm_head``) on our LLM, fed our spliced image embeddings: TRL's per-token
log-probabilities, summing over the completion, reference handling and sigmoid loss against ours. TRL's fused head
accumulates its log-sum-exp in float32 even for float64 inputs, which bounds the agreement (about 1e-7 relative).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_mm.preference import PreferenceModule, SyntheticPreferenceDataModule

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")


class _TRLView(nn.Module):
    """Our network as TRL calls a VLM: ``model(input_ids, attention_mask, pixel_values, labels, fused_lm_head)``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        trl_dpo.add_fused_lm_head(network.llm, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))

    def forward(self, input_ids, attention_mask, pixel_values, labels, fused_lm_head, use_cache=False):
        embeds = self.network.embed(input_ids, pixel_values)  # the rows' images: each pair's twice
        return self.network.llm(
            inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, fused_lm_head=fused_lm_head
        )


def _trainer(model: nn.Module, beta: float) -> SimpleNamespace:
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)
    return SimpleNamespace(
        model=model,
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        label_smoothing=0.0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )


@pytest.mark.slow
def test_dpo_loss_and_gradients_equal_trls():
    torch.manual_seed(0)
    module = PreferenceModule(model="tiny", beta=0.3, reference="copy")
    module.configure_model()
    module.network.double().eval()
    module._reference_copy.double()
    with torch.no_grad():  # the policy moved away from the reference, so the reference term matters
        for p in module.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    dm = SyntheticPreferenceDataModule(train_samples=6, val_samples=4, batch_size=6)
    dm.bind(module.data_contract)
    batch = next(iter(dm.train_dataloader()))
    batch["pixel_values"] = batch["pixel_values"].double()
    pairs = batch["pairs"]

    # ours: the tower once per pair, lean per-sample sums, the frozen copy as the reference
    out = module.pair_loss(batch)
    ours = out.losses.mean()
    ours.backward()
    our_grads = {n: p.grad for n, p in module.network.named_parameters()}  # None: never runs (tower tail)

    # TRL: its fused log-probabilities of the same rows, the same reference (from the copy, through TRL's head)
    policy, reference = _TRLView(copy.deepcopy(module.network)), _TRLView(copy.deepcopy(module._reference_copy))
    completion_mask = (batch["labels"] != -100).long()  # (2P, T): answer tokens
    images = torch.cat([batch["pixel_values"], batch["pixel_values"]])  # TRL feeds each row its images
    rows = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "pixel_values": images}
    with torch.no_grad():
        labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
        ref = reference(**rows, labels=labels, fused_lm_head=True).log_probs.sum(dim=1)  # (2P,)
    ref_ours, _ = module.reference_logprobs(batch)
    torch.testing.assert_close(ref_ours, ref.double(), rtol=0, atol=1e-5)  # TRL's head sums in float32
    inputs = {
        **rows,
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref[:pairs],
        "ref_rejected_logps": ref[pairs:],
    }
    theirs = trl_dpo.DPOTrainer._compute_loss(_trainer(policy, 0.3), policy, inputs, return_outputs=False)
    theirs.backward()

    assert abs(ours.item() - theirs.item()) < 1e-6
    assert ours.item() != pytest.approx(0.6931, abs=1e-3)  # not the trivial log 2
    compared = 0
    for name, p in policy.network.named_parameters():
        if our_grads[name] is None:
            assert p.grad is None or not p.grad.any(), name
            continue
        torch.testing.assert_close(our_grads[name], p.grad, rtol=0, atol=1e-6, msg=name)
        compared += 1
    assert compared > 20
