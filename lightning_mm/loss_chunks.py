"""The chunked core of :func:`lightning_mm.loss.linear_cross_entropy`: projection, softmax and gradients of the rows.

One autograd function, :class:`ChunkedLinearCrossEntropy`, computes the summed cross-entropy of
``hidden @ weight.T (+ bias)`` over supervised rows and, in the same pass, every gradient. Per chunk of rows: one GEMM
writes the logits into a buffer allocated once and reused by every chunk; the softmax is written over them (row by
row, so the max, the exponentials and the scaling stay in cache: one exponential per logit); the loss is
``-log p(target)``, and the probabilities minus the one-hot targets, in place, are the logit gradient; two GEMMs write
the gradients of the hidden rows and of the weight straight into their final buffers. Without gradients the
log-softmax is written instead (its exponentials are only summed).

The work is the three ``N x H x V`` GEMMs; what this layout keeps off the large tensors beyond them:

* no zero-fill of the ``(V, H)`` weight gradient and no separate add: the first chunk's GEMM writes it, later chunks
  accumulate with ``beta = 1``;
* no scaling pass over ``(V, H)``: ``1 / denom`` is folded into the small ``(C, H)`` operand of the weight-gradient
  GEMM, and ``backward`` skips scaling when ``grad_output`` is a CPU ``1`` (a loss backpropagated as it is);
* no second ``(C, V)`` buffer: logits, log-probabilities, probabilities and their gradient share one (two for
  low-precision inputs: the GEMM's own dtype and the float32 softmax).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["ChunkedLinearCrossEntropy", "compute_dtype"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the cross-entropy is evaluated in: ``dtype`` promoted to at least float32."""
    return torch.promote_types(dtype, torch.float32)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T (+ bias)`` over the given rows, divided by ``denom``.

    All gradients are computed in the forward pass, one chunk of rows at a time, and stored; ``backward`` only scales
    them by ``grad_output``. Only one chunk of logits exists at any time; it becomes the log-probabilities, the
    probabilities and the logit gradient in place.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,  # (N, H) supervised rows only
        weight: torch.Tensor,  # (V, H)
        bias: torch.Tensor | None,  # (V,)
        targets: torch.Tensor,  # (N,) int64, all supervised
        denom: torch.Tensor,  # () float32, >= 1
        chunk_size: int,
        mm_dtype: torch.dtype,
        needs_grad: tuple[bool, bool, bool],
        softcap: float | None = None,
    ) -> torch.Tensor:
        need_h, need_w, need_b = needs_grad
        num_rows, vocab = hidden.shape[0], weight.shape[0]
        acc_dtype = compute_dtype(mm_dtype)  # dtype of logits, loss and gradient accumulators
        full_precision = mm_dtype == acc_dtype  # the GEMMs write the float32 (float64) accumulators directly
        inv_denom = denom.to(acc_dtype).reciprocal()  # () 1 / denom, folded into the small (C, H) operands
        device = hidden.device

        h_mm = hidden.to(mm_dtype)  # (N, H)
        w_mm = weight.to(mm_dtype)  # (V, H); no copy unless autocast / mixed dtypes
        b_mm = bias.to(mm_dtype) if bias is not None else None  # (V,)

        grad_h = torch.empty(hidden.shape, dtype=acc_dtype, device=device) if need_h else None  # (N, H)
        grad_w = torch.empty(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None  # (V, H)
        grad_b = torch.empty(vocab, dtype=acc_dtype, device=weight.device) if need_b else None  # (V,)
        loss_sum = torch.zeros((), dtype=acc_dtype, device=device)

        rows = min(chunk_size, num_rows)
        logits_buf = torch.empty((rows, vocab), dtype=mm_dtype, device=device)  # (C, V), reused by every chunk
        acc_buf = None if full_precision else torch.empty((rows, vocab), dtype=acc_dtype, device=device)  # (C, V)

        any_grad = need_h or need_w or need_b
        # p(target) of every row when gradients are wanted: the loss is -log of it (one softmax, one exp per logit)
        target_probs = torch.empty(num_rows, dtype=acc_dtype, device=device) if any_grad else None  # (N,)
        for start in range(0, num_rows, chunk_size):
            end = min(start + chunk_size, num_rows)
            first = start == 0  # the first chunk writes the (V, H) / (V,) gradients, later ones accumulate
            h = h_mm[start:end]  # (C, H)
            tgt = targets[start:end, None]  # (C, 1)
            raw = logits_buf[: end - start]  # (C, V)
            logits, slope = _logits(h, w_mm, b_mm, raw, None if acc_buf is None else acc_buf[: end - start], softcap)

            if not any_grad:
                # log_softmax row by row (max, sum of exp and the write stay in cache), written over the logits.
                log_probs = torch.log_softmax(logits, dim=1, out=logits)  # (C, V)
                loss_sum -= log_probs.gather(1, tgt).sum()
                continue
            # softmax row by row, written over the logits: one exponential per logit gives the loss and the gradient.
            probs = torch.softmax(logits, dim=1, out=logits)  # (C, V)
            target_probs[start:end] = probs.gather(1, tgt).squeeze(1)  # (C,)
            # d(sum of losses)/d(logits) = softmax - onehot, in place.
            probs.scatter_add_(1, tgt, probs.new_full(tgt.shape, -1.0))  # (C, V) minus the one-hot targets
            if slope is not None:
                probs.mul_(slope)  # chain rule through the soft-capping
            g = probs if full_precision else raw.copy_(probs)  # (C, V) in mm_dtype, over the raw logits
            if need_h:
                if full_precision:
                    torch.mm(g, w_mm, out=grad_h[start:end])  # (C, H)
                else:
                    grad_h[start:end] = g @ w_mm  # (C, H) low-precision product
            if need_w:
                if full_precision:
                    h_scaled = h * inv_denom  # (C, H): grad_w = g.T @ h / denom without a pass over (V, H)
                    if first:
                        torch.mm(g.t(), h_scaled, out=grad_w)  # (V, H), written by the GEMM: no zero-fill
                    else:
                        grad_w.addmm_(g.t(), h_scaled)  # (V, H), beta = 1 accumulation
                elif first:
                    grad_w.copy_(g.t() @ h)  # (V, H) low-precision product, float32 accumulation
                else:
                    grad_w.add_(g.t() @ h)  # (V, H)
            if need_b:
                if first:
                    torch.sum(probs, dim=0, out=grad_b)  # (V,)
                else:
                    grad_b.add_(probs.sum(dim=0))  # (V,)
            del logits, probs, g, slope

        del logits_buf, acc_buf
        if any_grad:
            loss_sum = _loss_from_target_probs(target_probs, h_mm, w_mm, b_mm, targets, softcap)
        for grad in (grad_h, grad_b, None if full_precision else grad_w):
            if grad is not None:
                grad.mul_(inv_denom)  # small, or a low-precision product scaled in float32 after the accumulation
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return loss_sum * inv_denom

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        if ctx.grads is None:
            raise RuntimeError(
                "linear_cross_entropy: backward was called a second time; the precomputed gradients are consumed by "
                "the first backward pass (retain_graph is not supported)"
            )
        grads, dtypes = ctx.grads, ctx.dtypes
        ctx.grads = None  # release the buffers; they are scaled in place below
        # A loss backpropagated as it is gets grad_output == 1: then the passes over the gradients are skipped. The
        # check reads the value, so it is made on the CPU only (elsewhere it would synchronise with the device).
        unit = grad_output.device.type == "cpu" and bool(grad_output == 1)
        outputs = []
        for grad, dtype in zip(grads, dtypes, strict=True):
            if grad is None:
                outputs.append(None)
                continue
            if not unit:
                grad.mul_(grad_output.to(grad.dtype))
            outputs.append(grad.to(dtype))
        return outputs[0], outputs[1], outputs[2], None, None, None, None, None, None


def _logits(
    h: torch.Tensor,  # (C, H) in the GEMM dtype
    w_mm: torch.Tensor,  # (V, H)
    b_mm: torch.Tensor | None,  # (V,)
    raw: torch.Tensor,  # (C, V) buffer in the GEMM dtype
    acc: torch.Tensor | None,  # (C, V) float32 buffer when the GEMM dtype is lower, else None
    softcap: float | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Write ``h @ w_mm.T (+ b_mm)``, soft-capped if asked, into the buffers; return it and the soft-cap slope."""
    if b_mm is not None:
        torch.addmm(b_mm, h, w_mm.t(), out=raw)  # (C, V)
    else:
        torch.mm(h, w_mm.t(), out=raw)  # (C, V)
    logits = raw if acc is None else acc.copy_(raw)  # (C, V) in the accumulation dtype
    if softcap is None:
        return logits, None
    # z -> cap * tanh(z / cap); d/dz = 1 - tanh(z / cap)^2
    squashed = torch.tanh(logits / softcap)  # (C, V)
    torch.mul(squashed, softcap, out=logits)  # (C, V), in place
    return logits, squashed.square_().neg_().add_(1.0)  # (C, V) slope, in place


def _loss_from_target_probs(
    target_probs: torch.Tensor,  # (N,) softmax probability of each row's target
    h_mm: torch.Tensor,  # (N, H)
    w_mm: torch.Tensor,  # (V, H)
    b_mm: torch.Tensor | None,  # (V,)
    targets: torch.Tensor,  # (N,)
    softcap: float | None,
) -> torch.Tensor:
    """Summed ``-log p(target)``; rows whose ``p(target)`` is below the smallest normal number are recomputed.

    ``-log p`` loses precision once ``p`` is subnormal and is infinite once it underflows to zero (a target logit
    about 87 below the row's largest in float32), while the log-softmax stays exact there. Such rows are rare, so they
    are projected again and their loss taken from the log-softmax; this costs one device synchronisation per call.
    """
    row_loss = target_probs.log().neg_()  # (N,)
    underflow = target_probs < torch.finfo(target_probs.dtype).tiny  # (N,)
    if bool(underflow.any()):
        rows = underflow.nonzero().squeeze(1)  # (K,)
        raw = torch.empty((rows.numel(), w_mm.shape[0]), dtype=w_mm.dtype, device=w_mm.device)  # (K, V)
        acc = None if raw.dtype == target_probs.dtype else torch.empty_like(raw, dtype=target_probs.dtype)  # (K, V)
        logits, _ = _logits(h_mm[rows], w_mm, b_mm, raw, acc, softcap)  # (K, V)
        log_probs = torch.log_softmax(logits, dim=1, out=logits)  # (K, V)
        row_loss[rows] = -log_probs.gather(1, targets[rows, None]).squeeze(1)  # (K,)
    return row_loss.sum()
