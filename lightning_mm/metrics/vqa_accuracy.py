"""VQAAccuracy: VQAv2's soft accuracy against several human answers."""

from __future__ import annotations

from lightning_mm.metrics.base import AnswerMetric
from lightning_mm.metrics.normalize import normalize_answer

__all__ = ["VQAAccuracy", "vqa_soft_accuracy"]


def vqa_soft_accuracy(prediction: str, references: list[str]) -> float:
    """VQAv2 accuracy of one answer: ``min(#humans that gave it / 3, 1)``, averaged over leave-one-out subsets.

    With the usual 10 human answers this is the mean over the 10 subsets of 9 answers of
    ``min(matches in the subset / 3, 1)``; both sides are normalised with
    :func:`~lightning_mm.metrics.normalize.normalize_answer`. E.g. an answer given by 2 of 10 humans scores
    ``(8 * 2/3 + 2 * 1/3) / 10 = 0.6``; by 3 of 10: ``(7 * 1 + 3 * 2/3) / 10 = 0.9``; by 4 or more: 1.

    Args:
        prediction: The generated answer.
        references: The human answers (two or more; with one, every leave-one-out subset is empty).
    """
    pred = normalize_answer(prediction)
    matches = [normalize_answer(r) == pred for r in references]
    total = sum(matches)
    # leaving out answer k leaves total - matches[k] matching answers among the others
    return sum(min((total - m) / 3.0, 1.0) for m in matches) / len(matches)


class VQAAccuracy(AnswerMetric):
    """Mean VQAv2 soft accuracy (:func:`vqa_soft_accuracy`) of generated answers with several references each."""

    def score(self, prediction: str, references: list[str]) -> float:
        return vqa_soft_accuracy(prediction, references)
