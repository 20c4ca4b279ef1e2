"""ANLS: normalised Levenshtein similarity with the 0.5 threshold, best reference, worked by hand."""

import pytest

from lightning_mm.metrics import ANLS, normalized_levenshtein_similarity


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ("invoice", "invoice", 1.0),
        ("Invoice ", "invoice", 1.0),  # case and surrounding whitespace are normalised away
        ("abcd", "abce", 0.75),  # 1 edit / 4
        ("abc", "abcd", 0.75),  # 1 insertion / 4
        ("kitten", "sitting", 1 - 3 / 7),  # 3 edits / 7 = 0.43 < 0.5: kept
        ("ab", "abcd", 0.0),  # 2 / 4 = 0.5: at the threshold, scored 0
        ("abc", "abcdef", 0.0),  # 3 / 6 = 0.5
        ("abcd", "abcdefg", 1 - 3 / 7),  # 3 / 7 just under: 0.571
        ("xyz", "abc", 0.0),
        ("", "", 1.0),
    ],
)
def test_similarity_and_threshold(pred, ref, expected):
    assert normalized_levenshtein_similarity(pred, ref) == pytest.approx(expected, abs=1e-12)


def test_best_reference_and_mean_over_samples():
    metric = ANLS()
    metric.update(["abcd", "xyz"], [["zzzz", "abce"], "abc"])  # best of 0 and 0.75; then 0
    assert metric.compute().item() == pytest.approx(0.375)


def test_threshold_is_configurable():
    assert ANLS(threshold=0.6).score("ab", ["abcd"]) == pytest.approx(0.5)
    assert ANLS().score("ab", ["abcd"]) == 0.0
