"""Preference losses on per-sample answer log-probabilities: DPO (sigmoid), IPO and reference-free SimPO.

Pure functions. Each takes the per-pair sums of the answer's shifted token log-probabilities (see
:func:`~lightning_mm.preference.logprobs.answer_logprobs`) of the chosen and the rejected answer, under the policy
and (except SimPO) under the reference, and returns the per-pair loss and the implicit rewards; the caller reduces them
(a mean over the pairs of the whole accumulation window, see :class:`~lightning_mm.preference.PreferenceModule`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["LOSS_TYPES", "PreferenceLoss", "preference_loss"]

#: ``sigmoid``: DPO (Rafailov et al. 2023); ``ipo``: IPO (Azar et al. 2023) on per-token averages, as TRL computes it;
#: ``simpo``: SimPO (Meng et al. 2024), reference-free, on per-token averages with a target margin ``gamma``.
LOSS_TYPES = ("sigmoid", "ipo", "simpo")


class PreferenceLoss(NamedTuple):
    """Per-pair results of :func:`preference_loss`, each (P,)."""

    losses: torch.Tensor  # (P,) loss of each pair
    chosen_rewards: torch.Tensor  # (P,) implicit reward of the chosen answer (detached)
    rejected_rewards: torch.Tensor  # (P,) implicit reward of the rejected answer (detached)


def preference_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    loss_type: str = "sigmoid",
    beta: float = 0.1,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
    gamma: float = 0.5,
) -> PreferenceLoss:
    """Per-pair preference loss from summed answer log-probabilities.

    * ``sigmoid`` (DPO): ``-log sigmoid(beta * ((c - c_ref) - (r - r_ref)))``; rewards ``beta * (logp - ref_logp)``.
    * ``ipo``: ``((c - c_ref) / n_c - (r - r_ref) / n_r - 1 / (2 beta))^2`` (per-token averages, as TRL).
    * ``simpo``: ``-log sigmoid(beta * (c / n_c - r / n_r) - gamma)``, no reference; rewards ``beta * logp / n``.

    Args:
        chosen_logps: (P,) summed log-probabilities of the chosen answers under the policy.
        rejected_logps: (P,) the same for the rejected answers.
        ref_chosen_logps: (P,) chosen answers under the reference (``sigmoid``, ``ipo``).
        ref_rejected_logps: (P,) rejected answers under the reference (``sigmoid``, ``ipo``).
        loss_type: One of :data:`LOSS_TYPES`.
        beta: Inverse temperature (DPO, SimPO) or regularisation (IPO's tau).
        chosen_tokens: (P,) answer tokens of the chosen answers (``ipo``, ``simpo``).
        rejected_tokens: (P,) answer tokens of the rejected answers (``ipo``, ``simpo``).
        gamma: SimPO's target reward margin.

    Returns:
        :class:`PreferenceLoss` of (P,) tensors.

    Raises:
        ValueError: For an unknown ``loss_type`` or a missing input it needs.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    if loss_type != "simpo" and (ref_chosen_logps is None or ref_rejected_logps is None):
        raise ValueError(f"loss_type {loss_type!r} needs the reference log-probabilities")
    if loss_type != "sigmoid" and (chosen_tokens is None or rejected_tokens is None):
        raise ValueError(f"loss_type {loss_type!r} needs the answers' token counts")
    if loss_type == "simpo":
        chosen = chosen_logps / chosen_tokens.clamp(min=1)  # (P,) per-token average
        rejected = rejected_logps / rejected_tokens.clamp(min=1)  # (P,)
        losses = -F.logsigmoid(beta * (chosen - rejected) - gamma)  # (P,)
        return PreferenceLoss(losses, beta * chosen.detach(), beta * rejected.detach())
    chosen_ratio = chosen_logps - ref_chosen_logps  # (P,) log pi/pi_ref of the chosen answer
    rejected_ratio = rejected_logps - ref_rejected_logps  # (P,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))  # (P,)
    else:  # ipo
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)  # (P,)
        losses = (delta - 1 / (2 * beta)) ** 2  # (P,)
    return PreferenceLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())
