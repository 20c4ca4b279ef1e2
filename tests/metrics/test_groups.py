"""AnswerMetrics: overall and per-category values, which metric counts which sample, and the sync over ranks."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_mm.metrics import AnswerMetrics

TEN = ["2"] * 3 + ["3"] * 7  # "2": 0.9 soft accuracy, "3": 1.0
# (prediction, references, category) of six samples; two ranks take samples 0-2 and 3-5
SAMPLES = [
    ("2", TEN, "count"),
    ("red", ["red"], "color"),
    ("Blue.", ["blue"], "color"),
    ("3", TEN, "count"),
    ("squares", ["square"], "shape"),  # edit distance 1 / 7: ANLS 6/7
    ("green", ["red"], None),
]


def _expected() -> dict[str, float]:
    return {
        "exact_match": 4 / 6,  # "2" is among the 10 references too; "squares" is not "square"
        "anls": (1 + 1 + 0.8 + 1 + 6 / 7 + 0) / 6,  # ANLS keeps punctuation: "blue." vs "blue" is 1 edit / 5
        "vqa_accuracy": (0.9 + 1.0) / 2,  # only the samples with several references
        "exact_match/count": 1.0,
        "anls/count": 1.0,
        "vqa_accuracy/count": 0.95,
        "exact_match/color": 1.0,
        "anls/color": 0.9,
        "exact_match/shape": 0.0,
        "anls/shape": 6 / 7,
    }


def _update(metrics: AnswerMetrics, samples) -> None:
    preds, refs, cats = zip(*samples, strict=True)
    metrics.update(list(preds), list(refs), list(cats))


def test_values_overall_and_per_category():
    metrics = AnswerMetrics()
    _update(metrics, SAMPLES[:2])
    _update(metrics, SAMPLES[2:])
    values = {k: v.item() for k, v in metrics.compute().items()}
    assert values == pytest.approx(_expected())  # no vqa_accuracy for categories without multi-reference samples
    metrics.reset()
    assert metrics.compute() == {}


def _rank(rank: int, port: int, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        metrics = AnswerMetrics()
        _update(metrics, SAMPLES[3 * rank : 3 * rank + 3])  # rank 0 never sees "shape", rank 1 never "color"
        out[rank] = {k: v.item() for k, v in metrics.compute().items()}
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_values_are_synced_over_ranks_with_different_categories():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(port, out), nprocs=2, join=True)
    assert out[0] == pytest.approx(_expected())
    assert out[1] == out[0]


def test_update_checks_lengths():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        AnswerMetrics().update(["a", "b"], ["a"])
    assert torch.isnan(AnswerMetrics().overall["anls"].compute())
