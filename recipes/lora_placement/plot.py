"""The report's figure: per-seed test accuracy (seen and unseen) with 95 % CIs, forgetting, and the LR sweep."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

__all__ = ["write_plot"]


def _final(result: Mapping[str, Any], placement: str, split: str) -> list[float]:
    phase = "baseline" if placement == "none" else "final"
    return [
        100 * r["accuracy"][split]["all"]
        for r in result["runs"]
        if r["placement"] == placement and r["phase"] == phase and split in r["accuracy"]
    ]


def _ci_bar(ax: Any, x: float, ci: Mapping[str, float] | None, color: str, scale: float = 100.0) -> None:
    if not ci:
        return
    mean = scale * ci["mean"]
    if ci["n"] >= 2 and not math.isnan(ci["low"]):
        err = [[mean - scale * ci["low"]], [scale * ci["high"] - mean]]
        ax.errorbar([x], [mean], yerr=err, fmt="_", color=color, markersize=14, capsize=4, linewidth=1.5)
    else:
        ax.plot([x], [mean], "_", color=color, markersize=14)


def write_plot(result: Mapping[str, Any], path: Path) -> None:
    """Four panels: seen / unseen test accuracy per seed with CI; unseen per question type; forgetting; LR sweep."""
    rows = result["summary"]
    names = [r["placement"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax_acc, ax_type, ax_forget, ax_lr = axes.ravel()

    for k, (split, color) in enumerate((("test_seen", "tab:blue"), ("test_unseen", "tab:orange"))):
        for i, row in enumerate(rows):
            x = i + (k - 0.5) * 0.3
            values = _final(result, row["placement"], split)
            ax_acc.scatter(
                [x] * len(values),
                values,
                s=14,
                color=color,
                alpha=0.6,
                label=split.replace("_", " ") if i == 0 else None,
            )
            _ci_bar(ax_acc, x, row["accuracy"].get(split), "black")
    ax_acc.set_xticks(
        range(len(rows)),
        [f"{n}\n{r['trainable_params'] / 1000:.1f}K" for n, r in zip(names, rows, strict=True)],
        fontsize=8,
    )
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("test accuracy per seed (dots), mean and 95 % CI (bars)", fontsize=10)
    ax_acc.grid(axis="y", alpha=0.3)
    ax_acc.legend(fontsize=8)

    types = sorted({t for r in rows for t in r["unseen_by_type"]})
    width = 0.8 / max(len(types), 1)
    for k, t in enumerate(types):
        xs = [i + (k - (len(types) - 1) / 2) * width for i in range(len(rows))]
        ax_type.bar(
            xs,
            [100 * r["unseen_by_type"].get(t, math.nan) for r in rows],
            width,
            label=t,
            edgecolor="black",
            linewidth=0.3,
        )
    ax_type.set_xticks(range(len(rows)), names, fontsize=8)
    ax_type.set_ylabel("test-unseen accuracy (%)")
    ax_type.set_title("held-out combinations, per question type (mean over seeds)", fontsize=10)
    ax_type.grid(axis="y", alpha=0.3)
    ax_type.legend(fontsize=8, ncol=len(types))

    measures = (
        ("text task", lambda r: r.get("text_forgetting")),
        ("probe shape", lambda r: (r.get("probe_forgetting") or {}).get("shape")),
        ("probe colour", lambda r: (r.get("probe_forgetting") or {}).get("color")),
    )
    colors = ("tab:green", "tab:purple", "tab:red")
    for k, ((label, get), color) in enumerate(zip(measures, colors, strict=True)):
        for i, row in enumerate(rows):
            ci = get(row) if row["placement"] != "none" else None  # `none` is the "before"
            if ci:
                x = i + (k - 1) * 0.25
                first = not any(t.get_label() == label for t in ax_forget.collections)
                ax_forget.scatter([x], [100 * ci["mean"]], color=color, s=20, label=label if first else None)
                _ci_bar(ax_forget, x, ci, color)
    ax_forget.axhline(0, color="black", linewidth=0.6)
    ax_forget.set_xticks(range(len(rows)), names, fontsize=8)
    ax_forget.set_ylabel("after - before stage 2 (points)")
    ax_forget.set_title("forgetting: LLM text task, tower linear probe (mean, 95 % CI)", fontsize=10)
    ax_forget.grid(axis="y", alpha=0.3)
    ax_forget.legend(fontsize=8)

    for placement, sweep in result.get("sweep", {}).items():
        lrs = sorted(sweep["scores"])
        if lrs:
            (line,) = ax_lr.plot(lrs, [100 * sweep["scores"][lr] for lr in lrs], "o-", label=placement, markersize=4)
            if sweep["lr"] is not None:
                ax_lr.plot(
                    [sweep["lr"]], [100 * sweep["scores"][sweep["lr"]]], "*", color=line.get_color(), markersize=12
                )
    ax_lr.set_xscale("log")
    ax_lr.set_xlabel("peak learning rate")
    ax_lr.set_ylabel("validation accuracy, seen and unseen mean (%)")
    ax_lr.set_title("LR sweep (star: chosen)", fontsize=10)
    ax_lr.grid(alpha=0.3)
    ax_lr.legend(fontsize=8, ncol=2)

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
