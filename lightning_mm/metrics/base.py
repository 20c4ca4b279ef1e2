"""AnswerMetric: the mean of a per-sample score of generated answers against their references, synced over ranks."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torchmetrics import Metric

__all__ = ["AnswerMetric", "as_references"]

References = Sequence[str | Sequence[str]]


def as_references(references: References) -> list[list[str]]:
    """One list of reference strings per sample (a plain string is one reference)."""
    out = [[r] if isinstance(r, str) else [str(x) for x in r] for r in references]
    for i, refs in enumerate(out):
        if not refs:
            raise ValueError(f"Sample {i} has no reference answer.")
    return out


class AnswerMetric(Metric):
    """Mean over samples of :meth:`score` (prediction vs references).

    States are a sum of scores and a sample count, both summed over ranks (``dist_reduce_fx="sum"``), so the value is
    the mean over every sample of every rank. With no sample, ``compute`` returns NaN.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @abstractmethod
    def score(self, prediction: str, references: list[str]) -> float:
        """Score of one prediction against its references, in [0, 1]."""

    def scores(self, predictions: Sequence[str], references: References) -> torch.Tensor:
        """(B,) float64 per-sample scores (the state is not touched)."""
        refs = as_references(references)
        if len(refs) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions but {len(refs)} reference lists")
        return torch.tensor([self.score(p, r) for p, r in zip(predictions, refs, strict=True)], dtype=torch.float64)

    def update(self, predictions: Sequence[str], references: References) -> None:
        """Add a batch: one prediction string and one reference (or a list of references) per sample."""
        s = self.scores(predictions, references)
        self.total += s.sum().to(self.total.device)
        self.count += len(s)

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.total.device)
        return self.total / self.count
