"""AnswerMetrics: the generated-answer metrics of an evaluation, overall and per category, synced over ranks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from lightning_mm.metrics.anls import ANLS
from lightning_mm.metrics.base import AnswerMetric, References, as_references
from lightning_mm.metrics.exact_match import VQAExactMatch
from lightning_mm.metrics.vqa_accuracy import VQAAccuracy

__all__ = ["AnswerMetrics"]


def _kinds(anls_threshold: float) -> nn.ModuleDict:
    return nn.ModuleDict(
        {"exact_match": VQAExactMatch(), "vqa_accuracy": VQAAccuracy(), "anls": ANLS(threshold=anls_threshold)}
    )


def _all_ranks_categories(local: list[str]) -> list[str]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return sorted(local)
    gathered: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return sorted({c for names in gathered for c in names or []})


class AnswerMetrics(nn.Module):
    """Exact match (VQA normalisation), VQAv2 soft accuracy and ANLS of generated answers, overall and per category.

    Every sample counts in ``exact_match`` (against any of its references) and ``anls`` (best reference); only
    samples with two or more references count in ``vqa_accuracy``. :meth:`compute` returns the values over all
    ranks, named ``exact_match``, ``vqa_accuracy``, ``anls`` and ``<name>/<category>``, leaving out the metrics no
    sample counted in; every rank must call it (categories seen on any rank are gathered first).

    Args:
        anls_threshold: ANLS threshold on the normalised edit distance.
    """

    def __init__(self, anls_threshold: float = 0.5) -> None:
        super().__init__()
        self.anls_threshold = anls_threshold
        self.overall = _kinds(anls_threshold)
        self.by_category = nn.ModuleDict()  # key -> ModuleDict(kind -> metric)
        self._keys: dict[str, str] = {}  # category name -> ModuleDict key (names may hold dots)

    def _category(self, name: str) -> nn.ModuleDict:
        if name not in self._keys:
            self._keys[name] = f"category_{len(self._keys)}"
            device = self.overall["exact_match"].total.device
            self.by_category[self._keys[name]] = _kinds(self.anls_threshold).to(device)
        return self.by_category[self._keys[name]]

    @staticmethod
    def _update(metrics: nn.ModuleDict, predictions: list[str], references: list[list[str]]) -> None:
        metrics["exact_match"].update(predictions, references)
        metrics["anls"].update(predictions, references)
        multi = [i for i, refs in enumerate(references) if len(refs) > 1]
        if multi:
            metrics["vqa_accuracy"].update([predictions[i] for i in multi], [references[i] for i in multi])

    def update(
        self, predictions: Sequence[str], references: References, categories: Sequence[str | None] | None = None
    ) -> None:
        """Add a batch of generated answers.

        Args:
            predictions: One generated answer per sample.
            references: Per sample, its reference answer or a list of references.
            categories: Per sample, its category (None: counted in the overall values only).
        """
        preds, refs = list(predictions), as_references(references)
        if len(preds) != len(refs):
            raise ValueError(f"{len(preds)} predictions but {len(refs)} reference lists")
        self._update(self.overall, preds, refs)
        cats = list(categories) if categories is not None else [None] * len(preds)
        for name in sorted({c for c in cats if c is not None}):
            idx = [i for i, c in enumerate(cats) if c == name]
            self._update(self._category(name), [preds[i] for i in idx], [refs[i] for i in idx])

    def compute(self) -> dict[str, torch.Tensor]:
        """Values over all ranks (NaN-free: metrics without samples are left out)."""
        groups: list[tuple[str, nn.ModuleDict]] = [("", self.overall)]
        groups += [(f"/{name}", self._category(name)) for name in _all_ranks_categories(list(self._keys))]
        out = {}
        for suffix, metrics in groups:
            for kind, metric in metrics.items():
                with warnings.catch_warnings():  # a metric no sample of this rank counted in still syncs
                    warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
                    value = metric.compute()
                if not torch.isnan(value):
                    out[f"{kind}{suffix}"] = value.float()
        return out

    def reset(self) -> None:
        """Clear every metric (categories are kept)."""
        for module in self.modules():
            if isinstance(module, AnswerMetric):
                module.reset()
