"""Per-sample sums of the answer's shifted token log-probabilities, on the loss's lean path.

The same targets as :func:`~lightning_mm.loss.linear_cross_entropy` (labels shifted by one, ``-100`` not scored), the
same selection of the supervised rows and the same chunked projection by ``lm_head``: neither (B, T, V) nor (N, V)
logits ever exist. Unlike the cross-entropy, whose gradient is a fixed multiple of the summed loss, a preference loss
weighs each sample differently, so the per-row gradient is not known in the forward pass: the forward keeps only the
row log-sum-exps, and the backward recomputes each chunk's logits (one (C, V) chunk at a time again).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from lightning_mm.labels import check_labels, shift_labels

__all__ = ["answer_logprobs", "target_logprobs"]


class _ChunkedTargetLogProbs(torch.autograd.Function):
    """(N,) ``log softmax(hidden @ weight.T + bias)[target]`` of each row, chunk by chunk."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,  # (N, H)
        weight: torch.Tensor,  # (V, H)
        bias: torch.Tensor | None,  # (V,)
        targets: torch.Tensor,  # (N,) int64
        chunk_size: int,
        softcap: float | None,
    ) -> torch.Tensor:
        acc = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        out = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)  # (N,)
        lses = torch.empty_like(out)  # (N,)
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(start + chunk_size, hidden.shape[0])
            logits = _logits(hidden[start:end], weight, bias, softcap, acc)[0]  # (C, V)
            lse = torch.logsumexp(logits, dim=1)  # (C,)
            out[start:end] = logits.gather(1, targets[start:end, None]).squeeze(1) - lse
            lses[start:end] = lse
            del logits
        ctx.save_for_backward(hidden, weight, bias, targets, lses)
        ctx.settings = (chunk_size, softcap, acc)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # (N,)
        hidden, weight, bias, targets, lses = ctx.saved_tensors
        chunk_size, softcap, acc = ctx.settings
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty(hidden.shape, dtype=acc, device=hidden.device) if need_h else None  # (N, H)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None  # (V, H)
        grad_b = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if need_b else None  # (V,)
        w = weight.to(acc)  # (V, H)
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(start + chunk_size, hidden.shape[0])
            h = hidden[start:end].to(acc)  # (C, H)
            logits, slope = _logits(h, weight, bias, softcap, acc)  # (C, V)
            # d logp[target] / d logits = onehot - softmax, times each row's incoming gradient
            g = logits.sub_(lses[start:end, None]).exp_().neg_()  # (C, V) -softmax
            g[torch.arange(end - start, device=g.device), targets[start:end]] += 1.0
            g.mul_(grad_out[start:end, None].to(acc))
            if slope is not None:
                g.mul_(slope)  # chain rule through the soft-capping
            if need_h:
                grad_h[start:end] = g @ w  # (C, H)
            if need_w:
                grad_w.addmm_(g.t(), h)  # (V, H)
            if need_b:
                grad_b.add_(g.sum(dim=0))  # (V,)
            del logits, g, slope
        return (
            None if grad_h is None else grad_h.to(hidden.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
            None,
        )


def _logits(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None, acc: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(C, V) logits of the rows ``h`` (C, H) in ``acc``, soft-capped, and the cap's slope (C, V) (None without)."""
    logits = h.to(acc) @ weight.to(acc).t()  # (C, V)
    if bias is not None:
        logits += bias.to(acc)
    if softcap is None:
        return logits, None
    squashed = torch.tanh(logits / softcap)  # (C, V)
    return squashed * softcap, 1.0 - squashed.square()


def target_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    softcap: float | None = None,
) -> torch.Tensor:
    """(N,) log-probability of each row's target under ``hidden @ weight.T (+ bias)``, without the (N, V) logits.

    Args:
        hidden: (N, H) rows.
        weight: (V, H) ``lm_head`` weight.
        targets: (N,) target ids.
        bias: Optional (V,) ``lm_head`` bias.
        chunk_size: Rows projected at once (forward and backward).
        softcap: Final logit soft-capping (``cap * tanh(logits / cap)``), or None.

    Returns:
        (N,) log-probabilities, in at least float32 (float64 for float64 inputs).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return _ChunkedTargetLogProbs.apply(hidden, weight, bias, targets, int(chunk_size), softcap)


def answer_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int = 1024,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample sum of the supervised shifted targets' log-probabilities, and their count.

    ``-answer_logprobs(...)[0].sum()`` equals ``linear_cross_entropy(..., num_items=1)`` in value and gradient.

    Args:
        hidden: (B, T, H) final hidden states.
        weight: (V, H) ``lm_head`` weight.
        labels: (B, T) labels, ``ignore_index`` where nothing is scored (prompt, images, padding).
        bias: Optional (V,) ``lm_head`` bias.
        ignore_index: The label value that is not scored.
        chunk_size: Rows of the output projection computed at once.
        softcap: Final logit soft-capping, or None.

    Returns:
        ((B,) summed log-probabilities, exactly 0 for a sample without targets; (B,) int64 target counts).
    """
    check_labels(labels)
    if hidden.dim() != 3 or tuple(hidden.shape[:2]) != tuple(labels.shape):
        raise ValueError(f"hidden {tuple(hidden.shape)} must be (B, T, H) matching labels {tuple(labels.shape)}")
    targets = shift_labels(labels, ignore_index).to(hidden.device)  # (B, T)
    sample, pos = (targets != ignore_index).nonzero(as_tuple=True)  # (N,), (N,)
    rows = hidden[sample, pos]  # (N, H)
    logps = target_logprobs(rows, weight, targets[sample, pos], bias=bias, chunk_size=chunk_size, softcap=softcap)
    sums = logps.new_zeros(labels.shape[0]).index_add(0, sample, logps)  # (B,)
    counts = torch.zeros(labels.shape[0], dtype=torch.long, device=hidden.device).index_add_(
        0, sample, torch.ones_like(sample)
    )  # (B,)
    return sums, counts
