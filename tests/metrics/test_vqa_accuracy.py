"""VQAv2 soft accuracy against 10 human answers, worked by hand (mean over the 10 leave-one-out subsets of 9)."""

import pytest
import torch

from lightning_mm.metrics import VQAAccuracy, vqa_soft_accuracy


@pytest.mark.parametrize(
    ("humans", "expected"),
    [
        # k of 10 humans gave the answer: k subsets lose one of them (k-1 left), 10-k keep all k
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        (4, 1.0),  # every subset of 9 still holds >= 3
        (10, 1.0),
    ],
)
def test_soft_accuracy_with_ten_references(humans, expected):
    refs = ["2"] * humans + ["3", "4", "many", "5", "6", "7", "8", "9", "11", "12"][: 10 - humans]
    assert vqa_soft_accuracy("2", refs) == pytest.approx(expected, abs=1e-12)


def test_both_sides_are_normalised():
    refs = ["two", "2", "Two.", "the 2", "3", "3", "3", "3", "3", "3"]
    assert vqa_soft_accuracy("2", refs) == pytest.approx(1.0)  # four humans said "2", spelt four ways
    assert vqa_soft_accuracy("Three!", refs) == pytest.approx(1.0)
    assert vqa_soft_accuracy("four", refs) == 0.0


def test_metric_averages_samples():
    metric = VQAAccuracy()
    ten = ["yes"] * 2 + ["no"] * 8
    metric.update(["yes", "no"], [ten, ten])  # 0.6 and 1.0
    metric.update(["maybe"], [ten])  # 0.0
    assert metric.compute().item() == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    assert metric.count.item() == 3
    metric.reset()
    assert torch.isnan(metric.compute())
