"""The experiment's report: ``results.json`` (every run, the analysis), the plot, and the README's results block."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lora_placement.analysis import choose_lr, claim_verdicts, evaluate_contrasts, summarise
from lora_placement.plot import write_plot

__all__ = [
    "BEGIN",
    "END",
    "PLOT_FILE",
    "README_FILE",
    "RESULTS_FILE",
    "build_result",
    "render_block",
    "write_report",
    "write_results",
]

RESULTS_FILE = "results.json"
PLOT_FILE = "placement_accuracy.png"
README_FILE = "README.md"
BEGIN = "<!-- results:begin (written by run.py from results.json; edits inside are overwritten) -->"
END = "<!-- results:end -->"
CLAIM_PARTS = {
    1: "V+P+L together give basically no gain",
    2: "V+L give no gain",
    3: "the other combinations help",
}


def build_result(
    records: Sequence[Mapping[str, Any]], placements: Sequence[str], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """``results.json``'s content: meta, LR sweep, per-placement summary, contrasts, claim verdicts, every run."""
    config = meta.get("config") or {}
    section, analysis = config.get("stage2") or {}, config.get("analysis") or {}
    lrs = [float(x) for x in section.get("lrs", [])]
    selection = analysis.get("selection", ["val_seen", "val_unseen"])
    result: dict[str, Any] = {
        "meta": dict(meta),
        "sweep": {p: choose_lr(records, p, lrs, selection) for p in placements if p != "none"},
        "summary": summarise(records, placements, lrs, selection),
        "contrasts": {},
        "claims": {},
    }
    if analysis.get("contrasts"):
        for split in [analysis["endpoint"], *analysis.get("secondary", [])]:
            result["contrasts"][split] = evaluate_contrasts(records, analysis, split)
        result["claims"] = claim_verdicts(result["contrasts"][analysis["endpoint"]])
    result["runs"] = list(records)
    return result


def write_results(
    report_dir: str | Path, records: Sequence[Mapping[str, Any]], placements: Sequence[str], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``results.json`` alone (after every finished run, so a stopped experiment keeps what it did)."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = build_result(records, placements, meta)
    tmp = out / (RESULTS_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    tmp.replace(out / RESULTS_FILE)
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------------- text
def _pct_ci(ci: Mapping[str, float] | None) -> str:
    if not ci:
        return "-"
    if ci["n"] < 2 or math.isnan(ci["low"]):
        return f"{100 * ci['mean']:.1f}"
    return f"{100 * ci['mean']:.1f} [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]"


def _delta(ci: Mapping[str, float] | None, unchanged: bool | None = None) -> str:
    if not ci:
        return "-"
    if unchanged:
        return "0 (identical)"
    if ci["n"] < 2 or math.isnan(ci["low"]):
        return f"{100 * ci['mean']:+.1f}"
    return f"{100 * ci['mean']:+.1f} [{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}]"


def _lr(row: Mapping[str, Any]) -> str:
    if row["lr"] is None:
        return "-"
    return f"{row['lr']:g}" + (" (edge)" if row["sweep"].get("edge") else "")


def main_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Placement, LR, params, seen / unseen test accuracy with 95 % CI, fit of the training set, forgetting, cost."""
    head = [
        "placement",
        "LR chosen",
        "trainable params",
        "test seen % [95% CI]",
        "test unseen % [95% CI]",
        "unseen describe %",
        "training set %",
        "text task Δ (pts)",
        "probe shape Δ",
        "probe colour Δ",
        "seeds",
        "CPU s / run",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * (len(head) - 3)]
    for r in rows:
        acc = r["accuracy"]
        probe = r.get("probe_forgetting") or {}
        frozen_llm, frozen_tower = r["modes"].get("llm") == "frozen", r["modes"].get("vision") == "frozen"
        unchanged_text = frozen_llm and r.get("text_unchanged")
        unchanged_probe = frozen_tower and r.get("probe_unchanged")
        cells = [
            f"`{r['placement']}`",
            _lr(r),
            f"{r['trainable_params']:,}",
            _pct_ci(acc.get("test_seen")),
            _pct_ci(acc.get("test_unseen")),
            "-" if "describe" not in r["unseen_by_type"] else f"{100 * r['unseen_by_type']['describe']:.1f}",
            _pct_ci(acc.get("train")),
            "(before: " + f"{100 * r['text_task']['mean']:.1f} %)"
            if r["placement"] == "none" and r.get("text_task")
            else _delta(r.get("text_forgetting"), unchanged_text),
            "(before: " + f"{100 * r['probe']['shape']['mean']:.1f} %)"
            if r["placement"] == "none" and r.get("probe")
            else _delta(probe.get("shape"), unchanged_probe),
            "(before: " + f"{100 * r['probe']['color']['mean']:.1f} %)"
            if r["placement"] == "none" and r.get("probe")
            else _delta(probe.get("color"), unchanged_probe),
            str(len(r["seeds"])),
            f"{r['cpu_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def contrast_table(contrasts: Sequence[Mapping[str, Any]], margin: float) -> str:
    """One row per declared contrast: difference with its 95 % CI, Holm p, 90 % CI and Holm TOST p, verdict."""
    head = [
        "contrast (a - b)",
        "claim",
        "diff (pts) [95% CI]",
        "p (Holm)",
        "90% CI (pts)",
        f"TOST ±{100 * margin:g} p (Holm)",
        "verdict",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---:|---|"]
    for c in contrasts:
        if c["missing"]:
            lines.append(f"| `{c['a']}` - `{c['b']}` | {c['claim'].replace('_', ' ')} | not run | | | | |")
            continue
        t, e = c["test"], c["tost"]
        lines.append(
            f"| `{c['a']}` - `{c['b']}` | {c['claim'].replace('_', ' ')} | {100 * t['mean']:+.2f} "
            f"[{100 * t['low']:+.2f}, {100 * t['high']:+.2f}] | {c['p_diff']:.3g} | "
            f"[{100 * e['low90']:+.2f}, {100 * e['high90']:+.2f}] | {c['p_tost']:.3g} | {c['verdict']} |"
        )
    return "\n".join(lines)


def sweep_table(sweep: Mapping[str, Mapping[str, Any]], lrs: Sequence[float]) -> str:
    """Validation score (mean of the selection splits) per placement and LR; the chosen LR in bold."""
    lines = ["| placement | " + " | ".join(f"{lr:g}" for lr in lrs) + " |", "|---|" + "---:|" * len(lrs)]
    for placement, s in sweep.items():
        cells = []
        for lr in lrs:
            score = s["scores"].get(lr)
            text = "-" if score is None else f"{100 * score:.1f}"
            cells.append(f"**{text}**" if lr == s["lr"] else text)
        lines.append(f"| `{placement}`{' (edge)' if s['edge'] else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _checks(rows: Sequence[Mapping[str, Any]]) -> str:
    """Whether every placement that leaves the LLM (tower) frozen scored exactly as before on the text task (probe)."""
    parts = []
    for key, component, letter in (("text_unchanged", "llm", "L"), ("probe_unchanged", "vision", "V")):
        frozen = [r for r in rows if r["modes"].get(component) == "frozen" and r["placement"] != "none" and key in r]
        if frozen:
            bad = [r["placement"] for r in frozen if not r[key]]
            what = "text task" if letter == "L" else "tower probe"
            parts.append(
                f"{what} identical to before in every run of the {len(frozen)} placements without {letter}: "
                + ("yes" if not bad else f"**NO** ({', '.join(bad)})")
            )
    return ("Check (a frozen component must not change): " + "; ".join(parts) + ".") if parts else ""


def render_block(result: Mapping[str, Any]) -> str:
    """The generated part of the README."""
    meta, rows = result["meta"], result["summary"]
    config = meta.get("config") or {}
    analysis = config.get("analysis") or {}
    lrs = [float(x) for x in (config.get("stage2") or {}).get("lrs", [])]
    wall = meta.get("wall_minutes")
    status = "complete" if meta.get("complete") else "**PARTIAL: the run had not finished when this was written**"
    lines = [
        BEGIN,
        "",
        f"Command: `{meta['command']}`, started {meta['started']} (UTC), "
        + (f"{wall:.1f} min wall clock (all stages) " if wall is not None else "")
        + f"on {meta['cpus']} CPU cores shared with other work, {meta['workers']} worker process(es) x "
        f"{meta['threads_per_worker']} thread(s); {status}.",
        "",
    ]
    lines += [f"- {line}" for line in meta.get("stages", [])]
    lines += ["", main_table(rows), "", f"![results]({PLOT_FILE})", "", _checks(rows), ""]
    lines.append(
        "Test accuracy: exact match of the whole answer, in %, over the test questions of seen combinations (new "
        "images) and of the held-out test combinations; mean over the final seeds with its 95 % t interval. "
        "Training set: the share of the finite training set's samples (two questions each) with every answer right "
        "(how far a run fits what it saw). Forgetting: "
        "accuracy after stage 2 minus before (`none`), in points: the LLM's text-only task, and a linear probe "
        "(ridge, fixed images) of the tower's output features for shape and colour; `0 (identical)`: every run scored "
        "exactly as before, as a component that did not train must. CPU s: process CPU time of one run's training."
    )
    if result.get("contrasts"):
        margin = float(analysis["margin"])
        endpoint = analysis["endpoint"]
        lines += [
            "",
            f"**Declared contrasts, primary endpoint `{endpoint}`** (paired by seed; Holm over the family):",
            "",
            contrast_table(result["contrasts"][endpoint], margin),
        ]
        for split in analysis.get("secondary", []):
            lines += [
                "",
                f"Secondary endpoint `{split}` (own Holm family):",
                "",
                contrast_table(result["contrasts"][split], margin),
            ]
        lines += ["", "**Verdict per part of the claim** (primary endpoint):", ""]
        for part, entry in result.get("claims", {}).items():
            lines.append(
                f'- Part {part}, "{CLAIM_PARTS.get(int(part), part)}": **{entry["verdict"]}** '
                f"({'; '.join(entry['contrasts'])})."
            )
    if result.get("sweep"):
        selection = " and ".join(f"`{s}`" for s in analysis.get("selection", []))
        lines += [
            "",
            f"LR sweep (one run per LR, seed {(config.get('stage2') or {}).get('sweep_seed')}): mean "
            f"validation accuracy over {selection} in %, the chosen LR in bold; `(edge)`: chosen at the end of "
            "the grid.",
            "",
            sweep_table(result["sweep"], lrs),
        ]
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
    report_dir: str | Path, records: Sequence[Mapping[str, Any]], placements: Sequence[str], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``results.json``, the plot and the README block into ``report_dir``; returns ``results.json``'s content.

    Args:
        report_dir: Directory of the report (created if missing).
        records: Stage-2 run records (:func:`~lora_placement.stage2.run_stage2`).
        placements: Placements in table order.
        meta: Run facts (``command``, ``started``, ``wall_minutes``, ``complete``, ``cpus``, ``workers``,
            ``threads_per_worker``, ``stages``, ``config``).
    """
    result = write_results(report_dir, records, placements, meta)
    if result["summary"]:
        write_plot(result, Path(report_dir) / PLOT_FILE)
    _update_readme(Path(report_dir) / README_FILE, render_block(result))
    return result
