"""The experiment's report: per-placement statistics, the results table, the plot and the README block."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BEGIN",
    "END",
    "README_FILE",
    "RESULTS_FILE",
    "PLOT_FILE",
    "render_block",
    "separation",
    "summarise",
    "write_plot",
    "write_report",
]

RESULTS_FILE = "results.json"
PLOT_FILE = "placement_accuracy.png"
README_FILE = "README.md"
BEGIN = "<!-- results:begin (written by run.py from results.json; edits inside are overwritten) -->"
END = "<!-- results:end -->"
LABELS = {"color": "colour"}  # metric name -> column title (the task's own word is ``color``)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(records: Sequence[Mapping[str, Any]], placements: Sequence[str]) -> list[dict[str, Any]]:
    """One row per placement (in ``placements`` order): modes, trainable params, mean and std of every metric.

    Std is the sample standard deviation over seeds (0 for a single run).
    """
    rows = []
    for placement in placements:
        runs = [r for r in records if r["placement"] == placement]
        if not runs:
            continue
        metrics = {}
        for name in runs[0]["metrics"]:
            values = [r["metrics"][name] for r in runs if r["metrics"].get(name) is not None]
            if values:
                metrics[name] = _mean_std(values)
        losses = [r["val_loss"] for r in runs if r.get("val_loss") is not None]
        rows.append(
            {
                "placement": placement,
                "modes": runs[0]["modes"],
                "trainable_params": sum(runs[0]["trainable_params"].values()),
                "seeds": sorted(r["seed"] for r in runs),
                "metrics": metrics,
                "val_loss": _mean_std(losses) if losses else None,
                "fit_seconds": statistics.fmean(r["fit_seconds"] for r in runs),
                "cpu_seconds": statistics.fmean(r.get("cpu_seconds", 0.0) for r in runs),
            }
        )
    return rows


def separation(a: Mapping[str, Any], b: Mapping[str, Any], metric: str = "overall") -> dict[str, Any]:
    """Gap between two placements' means and whether it exceeds their seed-to-seed spread (sum of the two stds)."""
    (ma, sa), (mb, sb) = a["metrics"][metric], b["metrics"][metric]
    gap, spread = abs(ma - mb), sa + sb
    return {"gap": gap, "spread": spread, "separated": gap > spread}


def _trains(modes: Mapping[str, str]) -> str:
    parts = [f"{c} {m}" for c, m in modes.items() if m != "frozen"]
    return ", ".join(parts) or "nothing (stage-1 model)"


def _pct(mean_std: tuple[float, float] | None, runs: int) -> str:
    if mean_std is None:
        return "-"
    mean, std = mean_std
    return f"{100 * mean:.1f}" if runs == 1 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _loss(mean_std: Sequence[float] | None, runs: int) -> str:
    if mean_std is None:
        return "-"
    mean, std = mean_std
    return f"{mean:.3g}" if runs == 1 else f"{mean:.3g} ± {std:.2g}"


def table(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> str:
    """The Markdown results table."""
    cols = [LABELS.get(n, n) for n in metric_names]
    head = ["placement", "trains", "trainable params", *cols, "held-out loss", "seeds", "fit wall (s)", "fit CPU (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(cols) + 4)]
    for r in rows:
        n = len(r["seeds"])
        cells = [f"`{r['placement']}`", _trains(r["modes"]), f"{r['trainable_params']:,}"]
        cells += [_pct(r["metrics"].get(name), n) for name in metric_names]
        cells += [_loss(r.get("val_loss"), n), str(n), f"{r['fit_seconds']:.0f}", f"{r['cpu_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plot(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str], path: Path, title: str) -> None:
    """Left: per placement, each metric's mean accuracy with its seed std as error bar. Right: held-out loss (log)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(13, 4.6), width_ratios=(3, 1.2))
    width = 0.8 / len(metric_names)
    for k, name in enumerate(metric_names):
        xs = [i + (k - (len(metric_names) - 1) / 2) * width for i in range(len(rows))]
        means = [100 * r["metrics"][name][0] if name in r["metrics"] else math.nan for r in rows]
        stds = [100 * r["metrics"][name][1] if name in r["metrics"] else 0.0 for r in rows]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=LABELS.get(name, name), edgecolor="black", linewidth=0.4)
    labels = [f"{r['placement']}\n{r['trainable_params'] / 1000:.1f}K" for r in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("held-out answer accuracy (%)")
    ax.set_ylim(0, 115)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(ncol=len(metric_names), fontsize=8, loc="upper left")
    losses = [r.get("val_loss") or (math.nan, 0.0) for r in rows]
    ax_loss.errorbar(range(len(rows)), [m for m, _ in losses], yerr=[s for _, s in losses], fmt="o", capsize=3)
    ax_loss.set_yscale("log")
    ax_loss.set_xticks(range(len(rows)), [r["placement"] for r in rows], fontsize=8, rotation=60)
    ax_loss.set_ylabel("held-out loss per answer token")
    ax_loss.grid(alpha=0.3)
    ax_loss.set_title("loss (log scale; separates the runs near 100 %)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_block(result: Mapping[str, Any]) -> str:
    """The generated part of the README: command, date, table, plot, and the spread check."""
    meta, rows, names = result["meta"], result["summary"], result["metric_names"]
    trained = [r for r in rows if any(m != "frozen" for m in r["modes"].values()) and "overall" in r["metrics"]]
    lines = [
        BEGIN,
        "",
        f"Command: `{meta['command']}`, started {meta['started']} (UTC), finished in {meta['wall_minutes']:.1f} min "
        f"(wall clock, all stages) on {meta['cpus']} CPU cores shared with other work, "
        f"{meta['workers']} worker process(es) x {meta['threads_per_worker']} thread(s).",
        "",
    ]
    lines += [f"- {line}" for line in meta.get("stages", [])]
    lines += ["", table(rows, names), "", f"![accuracy per placement]({PLOT_FILE})", ""]
    count = meta.get("val_questions")
    held_out = f" ({count} questions, one per image, about a third per type)" if count else ""
    lines.append(
        f"Accuracy: held-out answer exact match in %{held_out}, mean ± sample std over seeds; the same held-out set "
        "for every run. Fit wall / CPU: mean wall "
        f"time and process CPU time of one run's training ({meta['workers']} run(s) at a time on the shared CPU; "
        "the CPU time is the fairer measure of cost)."
    )
    if len(trained) >= 2:
        best = max(trained, key=lambda r: r["metrics"]["overall"][0])
        worst = min((r for r in trained if r is not best), key=lambda r: r["metrics"]["overall"][0])
        sep = separation(best, worst)
        verdict = "larger" if sep["separated"] else "NOT larger"
        lines += [
            "",
            f"Best vs worst trained placement (overall): `{best['placement']}` vs `{worst['placement']}`, a gap of "
            f"{100 * sep['gap']:.1f} points, {verdict} than their seed-to-seed spread (sum of the two stds, "
            f"{100 * sep['spread']:.1f} points).",
        ]
    base = next((r for r in rows if r["placement"] == "none" and "overall" in r["metrics"]), None)
    if base is not None and trained:
        deltas = ", ".join(
            f"`{r['placement']}` {100 * (r['metrics']['overall'][0] - base['metrics']['overall'][0]):+.1f}"
            for r in trained
        )
        lines += ["", f"Change of overall accuracy over the stage-1 model (`none`), in points: {deltas}."]
    return "\n".join([*lines, "", END])


def _update_readme(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# LoRA placement\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def write_report(
    report_dir: str | Path,
    records: Sequence[Mapping[str, Any]],
    placements: Sequence[str],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``results.json``, the plot and the README block into ``report_dir``.

    Args:
        report_dir: Directory of the report (created if missing).
        records: Stage-2 run records (:func:`~lora_placement.stages.run_stage2`).
        placements: Placements in table order.
        meta: Run facts shown above the table (``command``, ``started``, ``wall_minutes``, ``cpus``, ``workers``,
            ``threads_per_worker``, ``val_questions``, ``stages``: lines about stages 0-1).

    Returns:
        The content of ``results.json``.
    """
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(records, placements)
    names = list(records[0]["metrics"]) if records else []
    result = {"meta": dict(meta), "metric_names": names, "summary": rows, "runs": list(records)}
    (out / RESULTS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    if rows:
        title = f"LoRA placement, {meta.get('model', '')}: held-out accuracy, mean ± std over seeds"
        write_plot(rows, names, out / PLOT_FILE, title)
    _update_readme(out / README_FILE, render_block(result))
    return result
