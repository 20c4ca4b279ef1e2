"""The targets of a causal LM: labels shifted by one, supervised targets counted, packed rows' sample starts masked.

Pure functions on (B, T) label tensors (``-100`` = not supervised), shared by the losses (:mod:`lightning_mm.loss`)
and the module.
"""

from __future__ import annotations

import torch

__all__ = ["check_labels", "count_supervised", "mask_sample_starts", "shift_labels"]


def check_labels(labels: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``labels`` is a 2-D integer tensor."""
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape (B, T), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Shift labels one step to the left so that position ``t`` is scored against ``labels[:, t + 1]``.

    Args:
        labels: Token labels of shape ``(B, T)``.
        ignore_index: Value marking unsupervised positions; it fills the last position of every row.

    Returns:
        Tensor of shape ``(B, T)`` equal to ``labels[:, 1:]`` padded with ``ignore_index`` at the end.

    Raises:
        ValueError: If ``labels`` is not a 2-D integer tensor.
    """
    check_labels(labels)
    shifted = labels.new_full(labels.shape, ignore_index)  # (B, T)
    shifted[:, :-1] = labels[:, 1:]
    return shifted


def count_supervised(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Count the supervised next-token targets of a batch.

    This is the number of terms a causal LM loss averages over, i.e. the number of entries of
    ``labels[:, 1:]`` that differ from ``ignore_index``. Sum it over a gradient-accumulation window (and all-reduce it
    across ranks) to obtain the ``num_items`` argument of :func:`shifted_cross_entropy` /
    :func:`linear_cross_entropy`.

    Args:
        labels: Token labels of shape ``(B, T)``.
        ignore_index: Value marking unsupervised positions.

    Returns:
        0-dim ``int64`` tensor on the device of ``labels`` (no host synchronisation is performed).

    Raises:
        ValueError: If ``labels`` is not a 2-D integer tensor.
    """
    check_labels(labels)
    return (labels[:, 1:] != ignore_index).sum()


def mask_sample_starts(
    labels: torch.Tensor, position_ids: torch.Tensor | None, ignore_index: int = -100
) -> torch.Tensor:
    """Labels of packed rows with no target across a sample boundary: the first token of each sample unsupervised.

    In a packed row (several samples, ``position_ids`` restarting at 0 at each), the shifted target of a sample's last
    position would be the next sample's first token. Setting the label of every position whose ``position_ids`` is 0
    to ``ignore_index`` removes exactly those targets; since the label at a sample's first position is never a target
    of the sample itself, every sample keeps the targets (and :func:`count_supervised` the count) it has unpacked.

    Args:
        labels: (B, T) token labels.
        position_ids: (B, T) positions restarting at 0 for each sample, or None (the labels are returned as they are).
        ignore_index: Value marking unsupervised positions.

    Returns:
        (B, T) labels: ``labels`` itself without ``position_ids``, else a masked copy.
    """
    if position_ids is None:
        return labels
    check_labels(labels)
    if tuple(position_ids.shape) != tuple(labels.shape):
        raise ValueError(f"position_ids {tuple(position_ids.shape)} do not match labels {tuple(labels.shape)}")
    return labels.masked_fill(position_ids.to(labels.device) == 0, ignore_index)  # (B, T)


# ----------------------------------------------------------------------------------------------------------------------
# Cross-entropy on materialised logits
# ----------------------------------------------------------------------------------------------------------------------
