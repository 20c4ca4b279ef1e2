"""LoRA's fused input dropout: the numbers of dropout + linear, a bool mask kept for backward, peft-compatible names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_mm.placement import DropoutLinear, Placement, dropout_linear, lora_layers, merge_lora
from lightning_mm.placement.lora_dropout import drop_mask


def saved_during(fn):
    """Run ``fn`` and return (its result, the tensors autograd saved for backward)."""
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


@pytest.mark.parametrize("shape", [(6, 16), (2, 5, 16)])
@pytest.mark.parametrize("x_grad", [True, False])
def test_same_numbers_as_dropout_then_linear(shape, x_grad):
    torch.manual_seed(0)
    p = 0.3
    x = torch.randn(shape, requires_grad=x_grad)
    w = torch.randn(4, 16, requires_grad=True)
    out, saved = saved_during(lambda: dropout_linear(x, w, p))
    (drop,) = [t for t in saved if t.dtype == torch.bool]
    assert drop.shape == x.shape and drop.any() and not drop.all()
    # the reference: the same mask applied the textbook way, then a linear layer, differentiated by autograd
    x_ref = x.detach().clone().requires_grad_(x_grad)
    w_ref = w.detach().clone().requires_grad_()
    ref = F.linear(x_ref * (~drop) / (1 - p), w_ref)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(w.grad, w_ref.grad)
    if x_grad:
        torch.testing.assert_close(x.grad, x_ref.grad)


def test_backward_keeps_the_input_itself_and_a_bool_mask():
    x = torch.randn(8, 32, requires_grad=True)
    h = x * 2  # a non-leaf input, as in a network
    w = torch.randn(4, 32, requires_grad=True)
    _, saved = saved_during(lambda: dropout_linear(h, w, 0.1))
    big = [t for t in saved if t.numel() == h.numel()]
    assert sorted(str(t.dtype) for t in big) == ["torch.bool", "torch.float32"]
    assert next(t for t in big if t.dtype == torch.float32).data_ptr() == h.data_ptr()  # no copy of the input
    # peft's own path keeps a float mask and the dropped copy: more bytes for the same layer
    _, peft_saved = saved_during(lambda: F.linear(F.dropout(h, 0.1, training=True), w))
    fused_bytes = sum(t.numel() * t.element_size() for t in big if t.data_ptr() != h.data_ptr())
    peft_bytes = sum(t.numel() * t.element_size() for t in peft_saved if t.numel() == h.numel())
    assert fused_bytes * 4 <= peft_bytes


def test_drops_the_requested_fraction():
    torch.manual_seed(1)
    x = torch.ones(400, 500)
    w = torch.eye(500)
    out = dropout_linear(x, w, 0.25)  # (400, 500): 0 where dropped, 1 / 0.75 where kept
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.01
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_cpu_drop_mask_rate_independence_and_seed(p):
    # Each element is dropped with probability p, two neighbours together with p^2 (independent draws), and the
    # global seed reproduces the mask (activation checkpointing's recompute relies on it).
    torch.manual_seed(3)
    mask = drop_mask((999, 1001), p, torch.device("cpu"))
    assert mask.shape == (999, 1001) and mask.dtype == torch.bool
    flat = mask.reshape(-1)
    n = flat.numel()
    assert abs(flat.float().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5
    both = (flat[0:-1:2] & flat[1::2]).float().mean().item()
    assert abs(both - p * p) < 5 * (p * p * (1 - p * p) / (n // 2)) ** 0.5
    torch.manual_seed(3)
    assert torch.equal(drop_mask((999, 1001), p, torch.device("cpu")), mask)
    assert not drop_mask((4, 5), 0.0, torch.device("cpu")).any()


def test_eval_and_zero_probability_are_a_plain_linear_layer():
    x, w = torch.randn(3, 8), torch.randn(2, 8)
    assert torch.equal(dropout_linear(x, w, 0.5, training=False), F.linear(x, w))
    assert torch.equal(dropout_linear(x, w, 0.0), F.linear(x, w))
    layer = DropoutLinear(8, 2, p=0.5).eval()
    assert torch.equal(layer(x), F.linear(x, layer.weight))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropout_linear(x, w, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropoutLinear(8, 2, p=-0.1)


def test_autocast_computes_in_its_dtype_and_returns_gradients_in_the_parameters():
    torch.manual_seed(0)
    x = torch.randn(4, 16, requires_grad=True)
    w = torch.randn(8, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, saved = saved_during(lambda: dropout_linear(x, w, 0.2))
        (drop,) = [t for t in saved if t.dtype == torch.bool]
        ref = F.linear(x * (~drop) / 0.8, w)  # autocast's own linear
    assert out.dtype == torch.bfloat16 == ref.dtype
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_from_linear_shares_the_weight_and_refuses_a_bias():
    base = nn.Linear(8, 4, bias=False)
    fused = DropoutLinear.from_linear(base, 0.1)
    assert fused.weight is base.weight and fused.p == 0.1
    with pytest.raises(ValueError, match="bias-free"):
        DropoutLinear.from_linear(nn.Linear(8, 4), 0.1)


def test_placements_fuse_dropout_and_keep_peft_names(build_module, vqa_batch):
    plain = build_module({"llm": Placement("lora", r=4, alpha=8.0)})
    fused = build_module({"llm": Placement("lora", r=4, alpha=8.0, dropout=0.1)})
    layers = lora_layers(fused.network.llm)
    assert len(layers) == 14
    for layer in layers.values():
        assert isinstance(layer.lora_A["default"], DropoutLinear) and layer.lora_A["default"].p == 0.1
        assert isinstance(layer.lora_dropout["default"], nn.Identity)
    for layer in lora_layers(plain.network.llm).values():  # no dropout: peft's layers untouched
        assert type(layer.lora_A["default"]) is nn.Linear
    assert list(fused.state_dict()) == list(plain.state_dict())
    # merging sees the same weights: the merged model computes what the adapted model computes in eval mode
    for layer in layers.values():
        nn.init.normal_(layer.lora_B["default"].weight, std=0.05)
    fused.eval()
    with torch.no_grad():
        before = fused(vqa_batch)
        assert merge_lora(fused.network.llm) == 14
        torch.testing.assert_close(fused(vqa_batch), before, rtol=1e-4, atol=1e-4)


def test_activation_checkpointing_recomputes_the_same_masks(build_module, vqa_batch):
    grads = []
    for ac in (False, True):
        placements = {"vision": Placement("lora", r=4, dropout=0.3), "llm": Placement("lora", r=4, dropout=0.3)}
        module = build_module(placements, seed=0, activation_checkpointing=ac)
        for layer in lora_layers(module.network).values():
            nn.init.normal_(layer.lora_B["default"].weight, generator=torch.Generator().manual_seed(1), std=0.05)
        module.train()
        torch.manual_seed(123)
        loss_sum, n = module.compute_loss(module(vqa_batch), vqa_batch["labels"])
        (loss_sum / n).backward()
        grads.append({k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(".lora_A." in k for k in grads[0])
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-5, atol=1e-6, msg=key)
