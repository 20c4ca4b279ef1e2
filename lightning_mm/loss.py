"""Causal language-modelling losses for multimodal LLMs.

Pure functions (no Lightning) that compute next-token cross-entropy the way a causal LM is trained: the logits at
position ``t`` are scored against the label at position ``t + 1``. Positions whose (shifted) label equals
``ignore_index`` -- image tokens, prompt tokens, padding -- are not supervised.

Two entry points are provided:

* :func:`shifted_cross_entropy` takes already materialised logits ``(B, T, V)``.
* :func:`linear_cross_entropy` takes the final hidden states ``(B, T, H)`` and the ``lm_head`` weight ``(V, H)`` and
  fuses the projection with the loss. Only the supervised rows are projected, in chunks, and the gradient is computed
  chunk by chunk during the forward pass, so neither a ``(B, T, V)`` nor an ``(N, V)`` logits tensor is ever
  materialised. In LLaVA-style batches most positions are image tokens that carry no label, which makes this both much
  faster and much lighter than projecting every position.

Both functions share the same reduction semantics:

* ``num_items=None``: mean over the supervised shifted targets of the batch.
* ``num_items`` given (``int`` or 0-dim tensor): summed loss divided by ``num_items``. This is the ``num_items_in_batch``
  convention of ``transformers`` and lets callers normalise by the number of targets in a whole gradient-accumulation
  window or across data-parallel ranks (see :func:`count_supervised`).
* No supervised target at all: the loss is an exact ``0.0`` that is connected to the autograd graph and yields zero
  gradients -- never ``NaN``.

The cross-entropy itself is always evaluated in at least float32, also for bf16/fp16 inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_mm.labels import check_labels as _check_labels
from lightning_mm.labels import count_supervised, mask_sample_starts, shift_labels
from lightning_mm.loss_chunks import ChunkedLinearCrossEntropy, compute_dtype

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "count_supervised",
    "linear_cross_entropy",
    "mask_sample_starts",
    "shift_labels",
    "shifted_cross_entropy",
]

#: Default number of supervised rows projected at once by :func:`linear_cross_entropy`. The transient memory of one
#: chunk is ``chunk_size * V * 4`` bytes (62.5 MiB for ``V = 32000``); 512 rows keep the three per-chunk matmuls
#: compute-bound on GPUs while the chunk stays small next to the ``(V, H)`` float32 weight gradient of a real model.
DEFAULT_CHUNK_SIZE = 512

NumItems = int | torch.Tensor | None


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def _denominator(num_items: NumItems, num_supervised: int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Return the divisor of the summed loss as a float32 0-dim tensor on ``device``, clamped to at least 1.

    Clamping keeps the result finite when nothing is supervised (the summed loss is then exactly zero, so the clamp
    does not change any meaningful value).
    """
    if num_items is None:
        denom = num_supervised
    elif isinstance(num_items, torch.Tensor):
        if num_items.numel() != 1:
            raise ValueError(f"num_items must be a scalar, got a tensor of shape {tuple(num_items.shape)}")
        denom = num_items.detach().reshape(())
    else:
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        denom = num_items
    denom = torch.as_tensor(denom, device=device).to(torch.float32)
    return denom.clamp(min=1.0)


def shifted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    num_items: NumItems = None,
) -> torch.Tensor:
    """Next-token cross-entropy on full logits.

    The logits are never sliced or copied for the shift; the labels are shifted instead (see :func:`shift_labels`),
    so the last position of every row is simply unsupervised.

    Args:
        logits: Logits of shape ``(B, T, V)``; low-precision logits are upcast to float32 for the loss.
        labels: Token labels of shape ``(B, T)``; ``ignore_index`` marks unsupervised positions.
        ignore_index: Label value that is not supervised.
        num_items: ``None`` for the mean over supervised targets; otherwise the summed loss is divided by
            ``num_items`` (an ``int`` or a 0-dim tensor, e.g. the number of targets in the accumulation window).

    Returns:
        0-dim loss tensor (float32, or float64 for float64 logits). Exactly ``0.0`` with zero gradient when no target
        is supervised.

    Raises:
        ValueError: If the shapes of ``logits`` and ``labels`` do not match or ``num_items`` is invalid.
    """
    _check_labels(labels)
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(labels.shape):
        raise ValueError(
            f"logits must have shape (B, T, V) matching labels (B, T); got logits {tuple(logits.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    vocab = logits.shape[-1]
    targets = shift_labels(labels, ignore_index).reshape(-1).to(logits.device)  # (B*T,)
    flat = logits.reshape(-1, vocab).to(compute_dtype(logits.dtype))  # (B*T, V)
    # A "sum" reduction over zero supervised targets is exactly 0 with a zero gradient, unlike "mean" (0 / 0).
    loss_sum = F.cross_entropy(flat, targets, ignore_index=ignore_index, reduction="sum")  # ()
    num_supervised = (targets != ignore_index).sum() if num_items is None else 0
    denom = _denominator(num_items, num_supervised, loss_sum.device)
    return loss_sum / denom.to(loss_sum.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Fused linear projection + cross-entropy
# ----------------------------------------------------------------------------------------------------------------------


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    num_items: NumItems = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    softcap: float | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy of ``hidden @ weight.T (+ bias)`` without materialising the logits.

    Equal in value and gradient (w.r.t. ``hidden``, ``weight`` and ``bias``) to
    ``shifted_cross_entropy(hidden @ weight.T + bias, labels)``. Only the ``N`` rows of ``hidden`` with a supervised
    shifted target are projected, ``chunk_size`` rows at a time; the softmax gradient of each chunk is folded into
    ``(N, H)`` / ``(V, H)`` float32 accumulators straight away, so the peak extra memory is one chunk of logits plus
    the gradient buffers. Gradients are only accumulated for inputs that require them (a frozen ``lm_head`` does not
    pay for the ``(V, H)`` weight gradient).

    The gradients are precomputed during the forward pass, so a graph through this loss can be backpropagated once
    (``retain_graph=True`` followed by a second backward is not supported), and double backward is not supported.

    Args:
        hidden: Final hidden states of shape ``(B, T, H)`` (float32, bf16, fp16 or float64).
        weight: ``lm_head`` weight of shape ``(V, H)``.
        labels: Token labels of shape ``(B, T)``; ``ignore_index`` marks unsupervised positions.
        bias: Optional ``lm_head`` bias of shape ``(V,)``.
        ignore_index: Label value that is not supervised.
        num_items: ``None`` for the mean over supervised targets; otherwise the summed loss is divided by
            ``num_items`` (an ``int`` or a 0-dim tensor).
        chunk_size: Number of supervised rows projected at once; trades peak memory (``chunk_size * V`` floats)
            against matmul efficiency.
        softcap: Final logit soft-capping of the LM (transformers' ``final_logit_softcapping``): the loss is that of
            ``softcap * tanh(logits / softcap)``. None: none.

    Returns:
        0-dim loss tensor (float32, or float64 for float64 inputs). Exactly ``0.0`` with zero gradients when no
        target is supervised.

    Raises:
        ValueError: If the shapes of ``hidden``, ``weight``, ``bias`` and ``labels`` are inconsistent, or
            ``chunk_size`` / ``num_items`` are invalid.
    """
    _check_labels(labels)
    if hidden.dim() != 3 or tuple(hidden.shape[:2]) != tuple(labels.shape):
        raise ValueError(
            f"hidden must have shape (B, T, H) matching labels (B, T); got hidden {tuple(hidden.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(
            f"weight must have shape (V, H) with H matching hidden (B, T, H); got weight {tuple(weight.shape)} "
            f"and hidden {tuple(hidden.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"bias must have shape (V,) matching weight (V, H); got bias {tuple(bias.shape)} "
            f"and weight {tuple(weight.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    hidden_size = hidden.shape[2]
    targets = shift_labels(labels, ignore_index).reshape(-1).to(hidden.device)  # (B*T,)
    rows = (targets != ignore_index).nonzero().squeeze(1)  # (N,) flat indices of supervised positions
    num_supervised = rows.numel()
    out_dtype = compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))

    if num_supervised == 0:
        # Exact zero that is connected to every input, so each receives a (zero) gradient; empty sums cannot be NaN
        # even if the inputs hold inf/NaN.
        zero = hidden.reshape(-1)[:0].sum().to(out_dtype) + weight.reshape(-1)[:0].sum().to(out_dtype)
        if bias is not None:
            zero = zero + bias[:0].sum().to(out_dtype)
        _denominator(num_items, 0, hidden.device)  # validate num_items consistently
        return zero

    # Select the supervised rows first: only N (not B*T) rows are ever projected. The backward of index_select
    # scatters the row gradients back to their (B, T, H) positions.
    hidden_rows = hidden.reshape(-1, hidden_size).index_select(0, rows)  # (N, H)
    row_targets = targets.index_select(0, rows)  # (N,)
    denom = _denominator(num_items, num_supervised, hidden.device)

    if torch.is_autocast_enabled(hidden.device.type):
        mm_dtype = torch.get_autocast_dtype(hidden.device.type)
    else:
        mm_dtype = torch.promote_types(hidden.dtype, weight.dtype)

    grad_enabled = torch.is_grad_enabled()
    needs_grad = (
        grad_enabled and hidden_rows.requires_grad,
        grad_enabled and weight.requires_grad,
        grad_enabled and bias is not None and bias.requires_grad,
    )
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        loss = ChunkedLinearCrossEntropy.apply(
            hidden_rows, weight, bias, row_targets, denom, int(chunk_size), mm_dtype, needs_grad, softcap
        )
    return loss.to(out_dtype)
