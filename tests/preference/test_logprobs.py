"""Per-sample answer log-probability sums on the lean path."""

from __future__ import annotations

import pytest
import torch

from lightning_mm.loss import linear_cross_entropy
from lightning_mm.preference.logprobs import answer_logprobs


def _inputs(seed: int = 0):
    torch.manual_seed(seed)
    hidden = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)  # (B, T, H)
    weight = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)  # (V, H)
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)  # (V,)
    labels = torch.randint(0, 11, (3, 7))
    labels[:, :3] = -100
    labels[2] = -100  # a sample without targets
    return hidden, weight, bias, labels


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_sums_equal_the_shifted_log_softmax_of_full_logits(softcap):
    hidden, weight, bias, labels = _inputs()
    sums, counts = answer_logprobs(hidden, weight, labels, bias=bias, chunk_size=2, softcap=softcap)
    logits = hidden @ weight.t() + bias  # (B, T, V)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logp = logits[:, :-1].log_softmax(-1)  # (B, T-1, V)
    target = labels[:, 1:]
    per_token = logp.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1) * (target != -100)
    torch.testing.assert_close(sums, per_token.sum(dim=1), rtol=0, atol=1e-12)
    assert counts.tolist() == (target != -100).sum(dim=1).tolist() == [4, 4, 0]
    assert sums[2].item() == 0.0


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_gradients_of_any_weighting(softcap):
    hidden, weight, bias, labels = _inputs(1)
    weights = torch.tensor([0.3, -2.0, 1.0], dtype=torch.float64)  # a preference loss weighs samples apart

    def weighted(h, w, b):
        return (answer_logprobs(h, w, labels, bias=b, chunk_size=2, softcap=softcap)[0] * weights).sum()

    assert torch.autograd.gradcheck(weighted, (hidden, weight, bias))


def test_minus_the_sum_is_the_summed_cross_entropy():
    hidden, weight, bias, labels = _inputs(2)
    sums, _ = answer_logprobs(hidden, weight, labels, bias=bias, chunk_size=3)
    ours = torch.autograd.grad(-sums.sum(), (hidden, weight, bias))
    ce = linear_cross_entropy(hidden, weight, labels, bias=bias, num_items=1)
    theirs = torch.autograd.grad(ce, (hidden, weight, bias))
    assert abs(-sums.sum().item() - ce.item()) < 1e-12
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_frozen_weight_gets_no_gradient_buffer():
    hidden, weight, _, labels = _inputs(3)
    weight.requires_grad_(False)
    sums, _ = answer_logprobs(hidden, weight, labels)
    sums.sum().backward()
    assert hidden.grad is not None and weight.grad is None


def test_bad_shapes_are_named():
    hidden, weight, _, labels = _inputs()
    with pytest.raises(ValueError, match="must be \\(B, T, H\\) matching labels"):
        answer_logprobs(hidden[:, :4], weight, labels)
