"""VQAExactMatch: the generated answer equals a reference after the VQA answer normalisation."""

from __future__ import annotations

from lightning_mm.metrics.base import AnswerMetric
from lightning_mm.metrics.normalize import normalize_answer

__all__ = ["VQAExactMatch"]


class VQAExactMatch(AnswerMetric):
    """Fraction of samples whose normalised prediction equals one of their normalised references.

    Normalisation: :func:`~lightning_mm.metrics.normalize.normalize_answer` (case, punctuation, articles, number
    words, contractions), so ``"Two."`` matches ``"2"`` and ``"the red one"`` matches ``"red one"``.
    """

    def score(self, prediction: str, references: list[str]) -> float:
        pred = normalize_answer(prediction)
        return float(any(pred == normalize_answer(r) for r in references))
