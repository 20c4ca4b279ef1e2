"""DPO / IPO / SimPO on summed log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_mm.preference.loss import preference_loss

C, R = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])  # policy (chosen, rejected)
RC, RR = torch.tensor([-3.5, -4.0]), torch.tensor([-3.5, -4.0])  # reference
NC, NR = torch.tensor([2, 4]), torch.tensor([1, 2])  # answer tokens


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_sigmoid():
    out = preference_loss(C, R, RC, RR, beta=0.5)
    for i in range(2):
        delta = (C[i] - RC[i]) - (R[i] - RR[i])
        assert out.losses[i].item() == pytest.approx(-_logsig(0.5 * delta.item()))
    torch.testing.assert_close(out.chosen_rewards, 0.5 * (C - RC))
    torch.testing.assert_close(out.rejected_rewards, 0.5 * (R - RR))


def test_ipo_on_per_token_averages():
    out = preference_loss(C, R, RC, RR, loss_type="ipo", beta=0.25, chosen_tokens=NC, rejected_tokens=NR)
    delta = (C - RC) / NC - (R - RR) / NR
    torch.testing.assert_close(out.losses, (delta - 2.0) ** 2)


def test_simpo_needs_no_reference():
    out = preference_loss(C, R, loss_type="simpo", beta=2.0, chosen_tokens=NC, rejected_tokens=NR, gamma=0.5)
    x = 2.0 * (C / NC - R / NR) - 0.5
    torch.testing.assert_close(out.losses, -torch.nn.functional.logsigmoid(x))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="loss_type must be one of"):
        preference_loss(C, R, RC, RR, loss_type="kto")
    with pytest.raises(ValueError, match="needs the reference"):
        preference_loss(C, R)
    with pytest.raises(ValueError, match="needs the answers' token counts"):
        preference_loss(C, R, RC, RR, loss_type="ipo")
