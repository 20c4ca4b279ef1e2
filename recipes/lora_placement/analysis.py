"""From run records to answers: the LR chosen per placement, per-placement summaries with 95 % CIs, the declared
contrasts (paired by seed, Holm-corrected, TOST for equivalence) and a verdict per part of the claim.

A record is what :func:`lora_placement.stage2.run_stage2` returns: ``placement``, ``seed``, ``lr``, ``phase``
(``baseline``, ``sweep``, ``final``), ``accuracy[split][category]``, and for baseline/final runs ``text_task`` and
``probe``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from lora_placement.stats import holm, mean_ci, paired_test, tost

__all__ = ["choose_lr", "claim_verdicts", "evaluate_contrasts", "summarise", "verdict"]

ALL = "all"


def _runs(records: Sequence[Mapping[str, Any]], placement: str, phase: str) -> list[Mapping[str, Any]]:
    return sorted((r for r in records if r["placement"] == placement and r["phase"] == phase), key=lambda r: r["seed"])


def choose_lr(
    records: Sequence[Mapping[str, Any]], placement: str, lrs: Sequence[float], selection: Sequence[str]
) -> dict[str, Any]:
    """The sweep's best LR for ``placement``: highest mean accuracy over the ``selection`` splits (ties: smaller LR).

    Returns:
        ``{"lr", "scores": {lr: score}, "edge": bool}``; ``edge`` flags a choice at either end of the grid (the best
        LR may lie outside it). ``lr`` is ``None`` when the placement has no sweep run.
    """
    scores = {
        float(r["lr"]): statistics.fmean(r["accuracy"][split][ALL] for split in selection)
        for r in _runs(records, placement, "sweep")
    }
    if not scores:
        return {"lr": None, "scores": {}, "edge": False}
    best = max(scores, key=lambda lr: (scores[lr], -lr))
    grid = sorted(float(x) for x in lrs)
    return {"lr": best, "scores": scores, "edge": len(grid) > 1 and best in (grid[0], grid[-1])}


def _ci(values: Sequence[float]) -> dict[str, float]:
    mean, low, high = mean_ci(values)
    return {"mean": mean, "low": low, "high": high, "n": len(values)}


def summarise(
    records: Sequence[Mapping[str, Any]], placements: Sequence[str], lrs: Sequence[float], selection: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per placement that has final runs (``none``: its baseline run), in ``placements`` order.

    Each row: the chosen LR (and sweep scores, edge flag), trainable parameters, accuracy per split with a 95 % CI over
    seeds, unseen accuracy per question type, forgetting (text-task accuracy and probe accuracy after stage 2 minus
    the baseline's, with CIs), whether the untouched components scored exactly as before, CPU seconds.
    """
    base = next(iter(_runs(records, "none", "baseline")), None)
    rows = []
    for placement in placements:
        runs = _runs(records, placement, "baseline" if placement == "none" else "final")
        if not runs:
            continue
        splits = [s for s in runs[0]["accuracy"] if all(s in r["accuracy"] for r in runs)]
        row: dict[str, Any] = {
            "placement": placement,
            "modes": runs[0]["modes"],
            "trainable_params": sum(runs[0]["trainable_params"].values()),
            "seeds": [r["seed"] for r in runs],
            "lr": runs[0]["lr"],
            "sweep": choose_lr(records, placement, lrs, selection),
            "accuracy": {s: _ci([r["accuracy"][s][ALL] for r in runs]) for s in splits},
            "unseen_by_type": {
                c: statistics.fmean(r["accuracy"]["test_unseen"].get(c, math.nan) for r in runs)
                for c in runs[0]["accuracy"].get("test_unseen", {})
                if c != ALL
            },
            "seen_by_type": {
                c: statistics.fmean(r["accuracy"]["test_seen"].get(c, math.nan) for r in runs)
                for c in runs[0]["accuracy"].get("test_seen", {})
                if c != ALL
            },
            "cpu_seconds": statistics.fmean(r["cpu_seconds"] for r in runs),
            "fit_seconds": statistics.fmean(r["fit_seconds"] for r in runs),
            "epochs": runs[0].get("epochs", 0),
        }
        if base is not None and "text_task" in runs[0]:
            row["text_task"] = _ci([r["text_task"] for r in runs])
            row["text_forgetting"] = _ci([r["text_task"] - base["text_task"] for r in runs])
            row["text_unchanged"] = all(r["text_task"] == base["text_task"] for r in runs)
            row["probe_forgetting"] = {t: _ci([r["probe"][t] - base["probe"][t] for r in runs]) for t in base["probe"]}
            row["probe"] = {t: _ci([r["probe"][t] for r in runs]) for t in base["probe"]}
            row["probe_unchanged"] = all(r["probe"] == base["probe"] for r in runs)
        rows.append(row)
    return rows


def verdict(claim: str, mean: float, different: bool, equivalent: bool) -> str:
    """The verdict on one contrast.

    ``no_gain``: confirmed when equivalent within the margin (or significantly worse), refuted when significantly
    better and not equivalent, undecided otherwise. ``gain``: confirmed when significantly better, refuted when
    equivalent or significantly worse, undecided otherwise.
    """
    if claim == "no_gain":
        if equivalent:
            return "confirmed"
        if different:
            return "confirmed (worse)" if mean < 0 else "refuted"
        return "undecided"
    if claim == "gain":
        if different:
            return "confirmed" if mean > 0 else "refuted (worse)"
        return "refuted" if equivalent else "undecided"
    raise ValueError(f"Unknown claim {claim!r}: use gain or no_gain")


def evaluate_contrasts(
    records: Sequence[Mapping[str, Any]], analysis: Mapping[str, Any], split: str
) -> list[dict[str, Any]]:
    """The declared contrasts on ``split``: paired t test and TOST per contrast, Holm over the family, verdicts.

    Contrasts whose placements lack two common final seeds are returned with ``"missing": True`` and no test.
    """
    margin, alpha = float(analysis["margin"]), float(analysis.get("alpha", 0.05))
    out = []
    for spec in analysis["contrasts"]:
        a = {r["seed"]: r["accuracy"][split][ALL] for r in _runs(records, spec["a"], "final") if split in r["accuracy"]}
        b = {r["seed"]: r["accuracy"][split][ALL] for r in _runs(records, spec["b"], "final") if split in r["accuracy"]}
        seeds = sorted(set(a) & set(b))
        item: dict[str, Any] = {**spec, "split": split, "seeds": seeds, "missing": len(seeds) < 2}
        if not item["missing"]:
            xs, ys = [a[s] for s in seeds], [b[s] for s in seeds]
            item["test"] = paired_test(xs, ys)
            item["tost"] = tost(xs, ys, margin)
        out.append(item)
    tested = [c for c in out if not c["missing"]]
    for key, adjusted in (
        ("p_diff", holm([c["test"]["p"] for c in tested])),
        ("p_tost", holm([c["tost"]["p"] for c in tested])),
    ):
        for c, p in zip(tested, adjusted, strict=True):
            c[key] = p
    for c in tested:
        c["different"] = c["p_diff"] < alpha
        c["equivalent"] = c["p_tost"] < alpha
        c["verdict"] = verdict(c["claim"], c["test"]["mean"], c["different"], c["equivalent"])
    return out


def claim_verdicts(contrasts: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per part of the claim: its contrasts' verdicts combined (all confirmed, all refuted, mixed or undecided)."""
    parts: dict[int, dict[str, Any]] = {}
    for c in contrasts:
        if c["missing"]:
            continue
        parts.setdefault(int(c["part"]), {"contrasts": []})["contrasts"].append(f"{c['a']} - {c['b']}: {c['verdict']}")
    for part, entry in parts.items():
        kinds = {v.split(": ", 1)[1].split(" ")[0] for v in entry["contrasts"]}
        if kinds == {"confirmed"}:
            entry["verdict"] = "confirmed"
        elif kinds == {"refuted"}:
            entry["verdict"] = "refuted"
        elif kinds == {"undecided"}:
            entry["verdict"] = "undecided"
        elif "confirmed" in kinds and "refuted" in kinds:
            entry["verdict"] = "mixed"
        elif "confirmed" in kinds:
            entry["verdict"] = "partly confirmed (the rest undecided)"
        else:
            entry["verdict"] = "partly refuted (the rest undecided)"
        parts[part] = entry
    return dict(sorted(parts.items()))
