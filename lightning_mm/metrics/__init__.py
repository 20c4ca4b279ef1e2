"""Metrics of generated answers (torchmetrics, synced over ranks): VQA exact match, VQAv2 soft accuracy, ANLS."""

from lightning_mm.metrics.anls import ANLS, normalized_levenshtein_similarity
from lightning_mm.metrics.base import AnswerMetric, as_references
from lightning_mm.metrics.exact_match import VQAExactMatch
from lightning_mm.metrics.groups import AnswerMetrics
from lightning_mm.metrics.normalize import normalize_answer, normalize_text
from lightning_mm.metrics.vqa_accuracy import VQAAccuracy, vqa_soft_accuracy

__all__ = [
    "ANLS",
    "AnswerMetric",
    "AnswerMetrics",
    "VQAAccuracy",
    "VQAExactMatch",
    "as_references",
    "normalize_answer",
    "normalize_text",
    "normalized_levenshtein_similarity",
    "vqa_soft_accuracy",
]
