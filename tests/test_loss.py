"""Tests for lightning_mm.loss: agreement with the reference formula and transformers, fused linear CE, edge cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.loss.loss_utils import ForCausalLMLoss

from lightning_mm.loss import (
    count_supervised,
    linear_cross_entropy,
    shift_labels,
    shifted_cross_entropy,
)

IGNORE = -100
# (seed, B, T, V): includes B=1, T=2 (a single shifted target) and rows of different raggedness.
CASES = [(0, 2, 9, 13), (1, 3, 17, 31), (2, 1, 2, 7), (3, 4, 33, 50)]


def _ragged_labels(batch: int, seq: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """Random labels with a per-row ignored prefix (like image/prompt tokens) plus random ignored holes."""
    labels = torch.randint(0, vocab, (batch, seq), generator=generator)  # (B, T)
    for row in range(batch):
        prefix = int(torch.randint(0, seq, (1,), generator=generator))
        labels[row, :prefix] = IGNORE
    holes = torch.rand(batch, seq, generator=generator) < 0.25
    labels[holes] = IGNORE
    # Guarantee at least one supervised shifted target so "mean" is well defined for the references.
    labels[0, -1] = int(torch.randint(0, vocab, (1,), generator=generator))
    return labels


def _reference_formula(logits: torch.Tensor, labels: torch.Tensor, num_items=None) -> torch.Tensor:
    vocab = logits.shape[-1]
    flat_logits = logits[:, :-1].reshape(-1, vocab)
    flat_labels = labels[:, 1:].reshape(-1)
    if num_items is None:
        return F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE)
    return F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE, reduction="sum") / num_items


def _value_and_grads(loss: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (loss.detach(), *torch.autograd.grad(loss, inputs))


def _assert_all_close(actual, expected, atol: float, rtol: float = 0.0) -> None:
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape
        torch.testing.assert_close(a.to(torch.float64), e.to(torch.float64), atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------------------------------------------------
# shift_labels / count_supervised
# ----------------------------------------------------------------------------------------------------------------------


def test_shift_labels_and_count():
    labels = torch.tensor([[IGNORE, 5, 6, IGNORE], [1, 2, IGNORE, 3]])
    expected = torch.tensor([[5, 6, IGNORE, IGNORE], [2, IGNORE, 3, IGNORE]])
    assert torch.equal(shift_labels(labels), expected)
    # The label at position 0 is never a target; the one at position T-1 is.
    assert int(count_supervised(labels)) == 4
    assert int(count_supervised(labels, ignore_index=6)) == 5
    assert labels[0, 0] == IGNORE  # input not modified


# ----------------------------------------------------------------------------------------------------------------------
# shifted_cross_entropy
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_num_items", [False, True])
@pytest.mark.parametrize(("seed", "batch", "seq", "vocab"), CASES)
def test_shifted_ce_matches_formula_and_transformers(seed, batch, seq, vocab, use_num_items):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(batch, seq, vocab, generator=gen, dtype=torch.float64)).requires_grad_()
    labels = _ragged_labels(batch, seq, vocab, gen)
    # A window-level count that differs from this batch's own count, like gradient accumulation would give.
    num_items = int(count_supervised(labels)) + 7 if use_num_items else None

    ours = _value_and_grads(shifted_cross_entropy(logits, labels, num_items=num_items), (logits,))
    formula = _value_and_grads(_reference_formula(logits, labels, num_items), (logits,))
    hf_num_items = torch.tensor(num_items) if use_num_items else None
    hf = _value_and_grads(ForCausalLMLoss(logits, labels, vocab, num_items_in_batch=hf_num_items), (logits,))

    assert ours[0].dtype == torch.float64
    _assert_all_close(ours, formula, atol=1e-6)
    # transformers upcasts with .float(), i.e. it evaluates float64 logits in float32.
    _assert_all_close(ours, hf, atol=1e-6, rtol=1e-6)
    # The last position never has a target, so its logits must get exactly zero gradient.
    assert torch.count_nonzero(ours[1][:, -1]) == 0
    assert torch.count_nonzero(ours[1]) > 0


def test_shifted_ce_num_items_tensor_and_int_agree():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 6, 9, generator=gen, dtype=torch.float64)
    labels = _ragged_labels(2, 6, 9, gen)
    as_int = shifted_cross_entropy(logits, labels, num_items=11)
    as_tensor = shifted_cross_entropy(logits, labels, num_items=torch.tensor(11))
    total = shifted_cross_entropy(logits, labels, num_items=1)
    torch.testing.assert_close(as_int, as_tensor)
    torch.testing.assert_close(as_int, total / 11)
    # num_items equal to the batch's own count gives the mean.
    torch.testing.assert_close(
        shifted_cross_entropy(logits, labels, num_items=count_supervised(labels)), shifted_cross_entropy(logits, labels)
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_shifted_ce_upcasts_low_precision(dtype):
    gen = torch.Generator().manual_seed(3)
    logits = (4 * torch.randn(2, 8, 40, generator=gen)).to(dtype).requires_grad_()
    labels = _ragged_labels(2, 8, 40, gen)
    loss = shifted_cross_entropy(logits, labels)
    assert loss.dtype == torch.float32
    expected = _reference_formula(logits.detach().double(), labels)
    # Exact up to float32 rounding of the (already low-precision) logits: the loss is not evaluated in `dtype`.
    torch.testing.assert_close(loss.double(), expected, atol=1e-5, rtol=1e-5)
    loss.backward()
    assert logits.grad.dtype == dtype


@pytest.mark.parametrize("num_items", [None, 0, 5, torch.tensor(5)])
def test_shifted_ce_all_ignored_is_zero(num_items):
    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.full((2, 5), IGNORE)
    labels[:, 0] = 3  # position 0 is never a target after the shift
    loss = shifted_cross_entropy(logits, labels, num_items=num_items)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    # transformers' mean over nothing is NaN; ours must not be.
    assert torch.isnan(ForCausalLMLoss(logits.detach(), labels, 7))


def test_shifted_ce_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 5, 7\).*\(2, 6\)"):
        shifted_cross_entropy(torch.randn(2, 5, 7), torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        shifted_cross_entropy(torch.randn(2, 5), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        shifted_cross_entropy(torch.randn(2, 5, 7), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="num_items"):
        shifted_cross_entropy(torch.randn(2, 5, 7), torch.zeros(2, 5, dtype=torch.long), num_items=-1)


# ----------------------------------------------------------------------------------------------------------------------
# linear_cross_entropy
# ----------------------------------------------------------------------------------------------------------------------


def _linear_inputs(seed, batch, seq, hidden_size, vocab, dtype=torch.float64, with_bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, hidden_size, generator=gen, dtype=dtype).requires_grad_()
    weight = (torch.randn(vocab, hidden_size, generator=gen, dtype=dtype) / hidden_size**0.5).requires_grad_()
    bias = torch.randn(vocab, generator=gen, dtype=dtype).requires_grad_() if with_bias else None
    labels = _ragged_labels(batch, seq, vocab, gen)
    return hidden, weight, bias, labels


@pytest.mark.parametrize("use_num_items", [False, True])
@pytest.mark.parametrize("chunk", ["small", "equal", "large"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(("seed", "batch", "seq", "vocab"), CASES)
def test_linear_ce_matches_full_logits(seed, batch, seq, vocab, with_bias, chunk, use_num_items):
    hidden, weight, bias, labels = _linear_inputs(seed, batch, seq, 6, vocab, with_bias=with_bias)
    n = int(count_supervised(labels))
    chunk_size = {"small": max(1, n // 3), "equal": n, "large": n + 5}[chunk]
    num_items = n + 3 if use_num_items else None
    inputs = (hidden, weight) if bias is None else (hidden, weight, bias)

    ours = _value_and_grads(
        linear_cross_entropy(hidden, weight, labels, bias=bias, num_items=num_items, chunk_size=chunk_size), inputs
    )

    def full_logits() -> torch.Tensor:
        return hidden @ weight.T if bias is None else hidden @ weight.T + bias  # (B, T, V)

    full = _value_and_grads(shifted_cross_entropy(full_logits(), labels, num_items=num_items), inputs)
    formula = _value_and_grads(_reference_formula(full_logits(), labels, num_items), inputs)

    assert ours[0].dtype == torch.float64
    _assert_all_close(ours, full, atol=1e-10)
    _assert_all_close(ours, formula, atol=1e-6)
    # Positions without a shifted target (ignored labels, last position) get exactly zero hidden gradient.
    unsupervised = shift_labels(labels) == IGNORE
    assert torch.count_nonzero(ours[1][unsupervised]) == 0
    assert torch.count_nonzero(ours[1][~unsupervised].abs().sum(-1)) == n


def test_linear_ce_frozen_weight():
    hidden, weight, _, labels = _linear_inputs(7, 2, 12, 5, 19, with_bias=False)
    weight = weight.detach()  # frozen lm_head
    loss = linear_cross_entropy(hidden, weight, labels, chunk_size=4)
    loss.backward()
    assert weight.grad is None
    ref_hidden = hidden.detach().clone().requires_grad_()
    ref = shifted_cross_entropy(ref_hidden @ weight.T, labels)
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(hidden.grad, ref_hidden.grad, atol=1e-10, rtol=0)


def test_linear_ce_frozen_hidden_and_no_grad():
    hidden, weight, _, labels = _linear_inputs(8, 2, 10, 4, 15, with_bias=False)
    hidden = hidden.detach()
    loss = linear_cross_entropy(hidden, weight, labels, chunk_size=3)
    (ref_w,) = torch.autograd.grad(shifted_cross_entropy(hidden @ weight.T, labels), (weight,))
    (w_grad,) = torch.autograd.grad(loss, (weight,))
    torch.testing.assert_close(w_grad, ref_w, atol=1e-10, rtol=0)
    with torch.no_grad():
        no_grad_loss = linear_cross_entropy(hidden, weight, labels)
    assert not no_grad_loss.requires_grad
    torch.testing.assert_close(no_grad_loss, loss.detach())


def test_linear_ce_single_backward_only():
    hidden, weight, _, labels = _linear_inputs(9, 1, 6, 3, 5, with_bias=False)
    loss = linear_cross_entropy(hidden, weight, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_linear_ce_scales_by_grad_output():
    hidden, weight, _, labels = _linear_inputs(10, 2, 8, 4, 9, with_bias=False)
    (g_ours,) = torch.autograd.grad(3.5 * linear_cross_entropy(hidden, weight, labels, chunk_size=2), (weight,))
    (g_ref,) = torch.autograd.grad(3.5 * shifted_cross_entropy(hidden @ weight.T, labels), (weight,))
    torch.testing.assert_close(g_ours, g_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_ce_low_precision_close_to_fp32(dtype):
    hidden, weight, bias, labels = _linear_inputs(11, 2, 40, 32, 100, dtype=torch.float32)
    lp = [t.detach().to(dtype).requires_grad_() for t in (hidden, weight, bias)]
    loss = linear_cross_entropy(lp[0], lp[1], labels, bias=lp[2], chunk_size=16)
    assert loss.dtype == torch.float32
    loss.backward()
    ref = linear_cross_entropy(hidden, weight, labels, bias=bias)
    ref.backward()
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, ref.detach(), atol=3e-2, rtol=3e-2)
    for low, high in zip(lp, (hidden, weight, bias), strict=True):
        assert low.grad.dtype == dtype
        torch.testing.assert_close(low.grad.float(), high.grad, atol=1e-2, rtol=5e-2)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_ce_exact_where_the_target_probability_underflows(with_bias, dtype):
    # Logits spread over hundreds: p(target) is below float32's smallest normal number (or zero) for some rows, where
    # -log p is imprecise or infinite; those rows' loss must still equal the log-softmax's.
    hidden, weight, bias, labels = _linear_inputs(16, 2, 30, 8, 64, dtype=torch.float32, with_bias=with_bias)
    weight = (weight.detach() * 60).to(dtype).requires_grad_()  # (V, H), logits of order +-300
    hidden = hidden.detach().to(dtype).requires_grad_()
    bias = None if bias is None else bias.detach().to(dtype).requires_grad_()
    inputs = (hidden, weight) if bias is None else (hidden, weight, bias)
    logits = (hidden @ weight.T if bias is None else hidden @ weight.T + bias).float()  # (B, T, V) in the GEMM dtype
    targets = shift_labels(labels)  # (B, T)
    log_p = torch.log_softmax(logits.double(), -1)[targets != IGNORE]  # (N, V)
    target_log_p = log_p.gather(1, targets[targets != IGNORE][:, None])  # (N, 1)
    assert (target_log_p < -104).any() and (target_log_p > -80).any()  # zero p, and ordinary rows

    ours = _value_and_grads(linear_cross_entropy(hidden, weight, labels, bias=bias, chunk_size=7), inputs)
    full = _value_and_grads(
        shifted_cross_entropy(logits, labels), tuple(t for t in (hidden, weight, bias) if t is not None)
    )
    assert torch.isfinite(ours[0])
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16 logits of order 300 are rounded to 2
    torch.testing.assert_close(ours[0], full[0], rtol=tol, atol=0)
    for a, e in zip(ours[1:], full[1:], strict=True):
        torch.testing.assert_close(a.float(), e.float(), rtol=2e-2, atol=1e-2)


@pytest.mark.parametrize("num_items", [None, 0, 4, torch.tensor(4)])
def test_linear_ce_all_ignored_is_zero(num_items):
    hidden, weight, bias, _ = _linear_inputs(12, 2, 5, 4, 7)
    labels = torch.full((2, 5), IGNORE)
    labels[:, 0] = 1  # never a target after the shift
    loss = linear_cross_entropy(hidden, weight, labels, bias=bias, num_items=num_items)
    assert torch.isfinite(loss) and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for tensor in (hidden, weight, bias):
        assert torch.equal(tensor.grad, torch.zeros_like(tensor))


def test_linear_ce_shape_errors():
    labels = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\(2, 5, 4\).*\(2, 6\)"):
        linear_cross_entropy(torch.randn(2, 5, 4), torch.randn(7, 4), labels)
    with pytest.raises(ValueError, match=r"\(7, 3\).*\(2, 6, 4\)"):
        linear_cross_entropy(torch.randn(2, 6, 4), torch.randn(7, 3), labels)
    with pytest.raises(ValueError, match=r"\(6,\).*\(7, 4\)"):
        linear_cross_entropy(torch.randn(2, 6, 4), torch.randn(7, 4), labels, bias=torch.randn(6))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(torch.randn(2, 6, 4), torch.randn(7, 4), labels, chunk_size=0)


def test_linear_ce_mixed_dtypes_and_autocast():
    hidden, weight, _, labels = _linear_inputs(13, 2, 24, 16, 40, dtype=torch.float32, with_bias=False)
    ref = linear_cross_entropy(hidden, weight, labels)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))

    # bf16 activations with an fp32 master weight: computed in the promoted dtype, grads in each input's dtype.
    hidden_bf16 = hidden.detach().to(torch.bfloat16).requires_grad_()
    loss = linear_cross_entropy(hidden_bf16, weight, labels, chunk_size=8)
    grads = torch.autograd.grad(loss, (hidden_bf16, weight))
    assert grads[0].dtype == torch.bfloat16 and grads[1].dtype == torch.float32
    torch.testing.assert_close(loss, ref.detach(), atol=2e-2, rtol=2e-2)

    # Under autocast the matmuls run in the autocast dtype; the loss and the grads stay float32.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(hidden, weight, labels, chunk_size=8)
    assert loss.dtype == torch.float32
    grads = torch.autograd.grad(loss, (hidden, weight))
    assert all(g.dtype == torch.float32 for g in grads)
    torch.testing.assert_close(loss, ref.detach(), atol=3e-2, rtol=3e-2)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=1e-2, rtol=5e-2)


@pytest.mark.parametrize("chunk", [3, 50])
def test_linear_ce_softcap_matches_full_logits(chunk):
    hidden, weight, bias, labels = _linear_inputs(14, 2, 16, 6, 23)
    inputs = (hidden, weight, bias)
    ours = _value_and_grads(
        linear_cross_entropy(hidden, weight, labels, bias=bias, chunk_size=chunk, softcap=2.0), inputs
    )
    capped = 2.0 * torch.tanh((hidden @ weight.T + bias) / 2.0)  # (B, T, V)
    full = _value_and_grads(shifted_cross_entropy(capped, labels), inputs)
    _assert_all_close(ours, full, atol=1e-10)


class _FreshLargeTensors(TorchDispatchMode):
    """Records the ops that allocate a new tensor of at least ``numel`` elements, and the ops writing ``watched``."""

    def __init__(self, numel: int, watched_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.numel, self.watched_shape = numel, watched_shape
        self.allocations: list[str] = []
        self.writes: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
        seen = {t.untyped_storage().data_ptr() for t in inputs}
        for result in out if isinstance(out, tuple | list) else (out,):
            if not isinstance(result, torch.Tensor) or result.numel() < self.numel:
                continue
            if result.untyped_storage().data_ptr() not in seen:
                self.allocations.append(str(func))
            elif tuple(result.shape) == self.watched_shape and func._schema.is_mutable:
                self.writes.append(str(func))
        return out


def test_linear_ce_one_logits_buffer_and_gemm_written_weight_grad():
    # 64 supervised rows in chunks of 8: the (8, V) logits buffer is allocated once and reused by every chunk, and
    # the (V, H) weight gradient is only ever written by the GEMMs (no zero-fill, no scaling pass).
    vocab, hidden_size, chunk = 2048, 4, 8
    gen = torch.Generator().manual_seed(15)
    hidden = torch.randn(1, 65, hidden_size, generator=gen).requires_grad_()  # (1, T, H)
    weight = torch.randn(vocab, hidden_size, generator=gen).requires_grad_()  # (V, H)
    labels = torch.randint(0, vocab, (1, 65), generator=gen)  # (1, T), 64 shifted targets
    mode = _FreshLargeTensors(vocab * hidden_size, (vocab, hidden_size))
    with mode:
        loss = linear_cross_entropy(hidden, weight, labels, chunk_size=chunk)
        loss.backward()
    assert sorted(mode.allocations) == ["aten.empty.memory_format", "aten.empty.memory_format"], mode.allocations
    assert set(mode.writes) <= {"aten.mm.out", "aten.addmm_.default"}, mode.writes
    ref_weight = weight.detach().clone().requires_grad_()
    shifted_cross_entropy(hidden.detach() @ ref_weight.T, labels).backward()
    torch.testing.assert_close(weight.grad, ref_weight.grad)
