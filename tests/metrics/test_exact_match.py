"""Exact match after the VQA normalisation, against any reference."""

import pytest

from lightning_mm.metrics import VQAExactMatch


def test_exact_match_normalises_and_takes_any_reference():
    metric = VQAExactMatch()
    preds = ["Two.", "the red one", "blue", "Yes"]
    refs = ["2", ["red one", "crimson"], "bluish", ["no", "nope"]]
    assert metric.scores(preds, refs).tolist() == [1.0, 1.0, 0.0, 0.0]
    metric.update(preds, refs)
    assert metric.compute().item() == pytest.approx(0.5)


def test_mismatched_lengths_and_empty_references_are_refused():
    metric = VQAExactMatch()
    with pytest.raises(ValueError, match="2 predictions but 1"):
        metric.update(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="Sample 0 has no reference"):
        metric.update(["a"], [[]])
