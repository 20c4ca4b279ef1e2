"""ANLS: average normalised Levenshtein similarity, for free-text answers (DocVQA, ST-VQA)."""

from __future__ import annotations

from torchmetrics.functional.text import edit_distance

from lightning_mm.metrics.base import AnswerMetric
from lightning_mm.metrics.normalize import normalize_text

__all__ = ["ANLS", "normalized_levenshtein_similarity"]


def normalized_levenshtein_similarity(prediction: str, reference: str, threshold: float = 0.5) -> float:
    """``1 - d / max(len)`` of the normalised strings (``d``: character edit distance), 0 when ``d / max(len)``
    reaches ``threshold``; two empty strings score 1.

    Both strings are lower-cased and their whitespace collapsed (:func:`~lightning_mm.metrics.normalize.normalize_text`).
    """
    a, b = normalize_text(prediction), normalize_text(reference)
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    distance = int(edit_distance([a], [b], reduction="none")[0]) / longest
    return 1.0 - distance if distance < threshold else 0.0


class ANLS(AnswerMetric):
    """Mean over samples of the best :func:`normalized_levenshtein_similarity` over the sample's references.

    Args:
        threshold: Normalised distances from this value up score 0 (0.5 in DocVQA / ST-VQA).
    """

    def __init__(self, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold

    def score(self, prediction: str, references: list[str]) -> float:
        return max(normalized_levenshtein_similarity(prediction, r, self.threshold) for r in references)
