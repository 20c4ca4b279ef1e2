"""Where should LoRA go in a LLaVA-style model? Pretrain, align, fine-tune every placement, report a table and a plot.

Usage:
    python recipes/lora_placement/run.py                                  # the whole experiment (experiment.yaml)
    python recipes/lora_placement/run.py --placements P V+L --seeds 0    # a subset (stages 0-1 come from the cache)
    python recipes/lora_placement/run.py --set stage2.trainer.max_steps=800 --set stage2.components.L.init_args.r=16
    python recipes/lora_placement/run.py --report-only                   # redo the report from cached runs

Stage outputs and run records are cached under ``output_dir`` with a fingerprint of the settings they depend on, so a
change of stage 2 reruns stage 2 alone; ``--force`` reruns a stage and everything after it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the recipe importable as the package `lora_placement`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_placement import analysis, report, stage2, stages  # noqa: E402
from lora_placement.config import (  # noqa: E402
    DEFAULT_CONFIG,
    apply_overrides,
    fingerprint,
    load_config,
    parse_placement,
    placement_label,
)

__all__ = ["main", "run_experiment"]

STAGES = ("stage0", "stage1", "stage2")
# --quick: the whole pipeline in miniature (a few steps per stage, three placements, two LRs, two seeds), written
# under runs/ so the committed report stays as it is; it proves the experiment runs, its numbers mean nothing.
QUICK: dict[str, Any] = {
    "output_dir": "runs/lora_placement_quick",
    "report_dir": "runs/lora_placement_quick/report",
    "workers": 1,
    "stage0": {
        "vision": {"steps": 4, "batch_size": 16, "val_samples": 32},
        "llm": {"trainer": {"max_steps": 4}, "data": {"init_args": {"batch_size": 8, "val_samples": 16}}},
    },
    "stage1": {"trainer": {"max_steps": 4}, "data": {"init_args": {"batch_size": 8, "val_samples": 16}}},
    "stage2": {
        "placements": ["none", "P", "V+L"],
        "seeds": [0, 1],
        "lrs": [1.0e-3, 3.0e-3],
        "trainer": {"max_steps": 4},
        "data": {"init_args": {"train_images": 16, "batch_size": 8, "val_samples": 16, "test_samples": 16}},
        "measure": {"text_task": {"samples": 16}, "probe": {"train_images": 32, "test_images": 32}},
    },
}


class InlineExecutor:
    """Runs each task at submission, in this process (``workers: 1``)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _cached(path: Path, fp: str) -> dict[str, Any] | None:
    """The stored stage info / run record if it exists and was made with the same settings."""
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    return info if info.get("fingerprint") == fp else None


def _stage2_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """What every stage-2 run depends on (not which runs there are: seeds, placements, LR grid)."""
    skip = ("seeds", "placements", "components", "lrs", "sweep_seed")
    return {k: v for k, v in section.items() if k not in skip}


class Experiment:
    """Runs the stages in order, reusing cached outputs; see :func:`run_experiment`."""

    def __init__(
        self,
        config: Mapping[str, Any],
        force: str | None,
        log: Callable[[str], None],
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.out = Path(config.get("output_dir", "runs/lora_placement")).resolve()
        self.force_from = STAGES.index(force) if force else len(STAGES)
        self.workers = int(config.get("workers", 1))
        self.threads = int(config.get("threads_per_worker", 1))
        self.log = log
        self.ran: list[str] = []
        self.cached: list[str] = []
        self.stage_lines: list[str] = []
        self.on_record = on_record or (lambda record: None)

    def _reuse(self, name: str, stage: str, path: Path, fp: str) -> dict[str, Any] | None:
        info = None if STAGES.index(stage) >= self.force_from else _cached(path, fp)
        (self.cached if info is not None else self.ran).append(name)
        if info is not None:
            self.log(f"{name}: cached ({path.parent})")
        return info

    # -------------------------------------------------------------------------------- stages 0 and 1
    def sources(self, pool: Any) -> tuple[dict[str, Any], str]:
        """Spec overrides pointing at the stage-0/1 outputs (run or cached), and stage 1's fingerprint."""
        cfg, model = self.config, self.config["model"]
        stage0 = cfg.get("stage0") or {}
        sources: dict[str, Any] = {}
        pending: dict[str, Future] = {}
        fps = {}
        for part in ("vision", "llm"):
            if not stage0.get(part):
                continue
            fps[part] = fingerprint("stage0", part, model, stage0[part])
            directory = self.out / f"stage0_{part}"
            info = self._reuse(f"stage 0 ({part})", "stage0", directory / stages.STAGE_FILE, fps[part])
            if info is None:
                self.log(f"stage 0 ({part}): training")
                fn = stages.run_stage0_vision if part == "vision" else stages.run_stage0_llm
                pending[part] = pool.submit(fn, cfg, str(directory), fps[part], self.threads)
            else:
                pending[part] = _done(info)
        for part, future in pending.items():
            info = future.result()
            directory = self.out / f"stage0_{part}"
            if part == "vision":
                sources["vision_kwargs"] = {"pretrained_cfg_overlay": {"file": str(directory / "model.safetensors")}}
                line = f"held-out {info['target']} accuracy {info['val_accuracy']:.3f}"
                self.stage_lines.append(f"Stage 0, vision tower: classifier of {info['target']} only, {line}.")
            else:
                sources["llm"] = str(directory)
                self.stage_lines.append(f"Stage 0, LLM: text only, held-out loss {info['val_loss']:.3g}.")
            self.log(f"stage 0 ({part}): {info}")
        fp1 = fingerprint("stage1", model, fps, cfg.get("stage1"))
        if cfg.get("stage1"):
            directory = self.out / "stage1"
            info = self._reuse("stage 1", "stage1", directory / stages.STAGE_FILE, fp1)
            if info is None:
                self.log("stage 1: training the projector")
                info = pool.submit(stages.run_stage1, cfg, sources, str(directory), fp1, self.threads).result()
            self.log(f"stage 1: {info}")
            sources["projector_weights"] = str(directory / "mm_projector.bin")
            acc = info.get("val_answer_accuracy")
            self.stage_lines.append(
                "Stage 1, projector alone: held-out caption exact match "
                + ("n/a" if acc is None else f"{acc:.3f}")
                + f", loss {info['val_loss']:.3g}."
            )
        return sources, fp1

    # -------------------------------------------------------------------------------- stage 2
    def _run_all(self, pool: Any, tasks: list[tuple[str, int, float | None, str]], sources, fp1) -> list[dict]:
        """Run (or reuse) stage-2 tasks ``(placement, seed, lr, phase)``; each finished record is reported at once."""
        section = self.config["stage2"]
        settings = _stage2_settings(section)
        pending = []
        records = []
        for placement, seed, lr, phase in tasks:
            letters = parse_placement(placement)
            components = {x: section["components"][x] for x in letters}
            fp = fingerprint("stage2", self.config["model"], fp1, settings, components, letters, seed, lr, phase)
            lr_tag = "" if lr is None else f"_lr{lr:g}"
            path = self.out / "stage2" / placement / f"{phase}_seed{seed}{lr_tag}.json"
            record = self._reuse(f"stage 2 {phase} {placement} lr {lr} seed {seed}", "stage2", path, fp)
            if record is not None:
                records.append(record)
                self.on_record(record)
                continue
            args = (self.config, sources, placement, seed, lr, phase, str(path), fp, self.threads)
            pending.append(pool.submit(stage2.run_stage2, *args))
        for k, future in enumerate(_as_completed(pending), 1):
            record = future.result()
            records.append(record)
            self.on_record(record)
            acc = record["accuracy"]
            scores = ", ".join(f"{split} {acc[split]['all']:.3f}" for split in acc)
            self.log(
                f"stage 2 {record['phase']} {record['placement']} lr {record['lr']} seed {record['seed']}: {scores}; "
                f"{record['steps']} steps, {record['cpu_seconds']:.0f} CPU s ({k}/{len(pending)})"
            )
        return records

    def stage2(self, pool: Any, sources: Mapping[str, Any], fp1: str) -> list[dict[str, Any]]:
        """The baseline (``none``), the LR sweep (one seed per LR), then the final seeds at each chosen LR."""
        section = self.config["stage2"]
        names = [placement_label(parse_placement(p)) for p in section["placements"]]
        trained = sorted((p for p in names if p != "none"), key=lambda p: -len(parse_placement(p)))  # costly first
        lrs = [float(x) for x in section["lrs"]]
        first = [(p, int(section["sweep_seed"]), lr, "sweep") for p in trained for lr in lrs]
        if "none" in names:
            first.append(("none", int(section["seeds"][0]), None, "baseline"))
        records = self._run_all(pool, first, sources, fp1)
        selection = (self.config.get("analysis") or {}).get("selection", ["val_seen", "val_unseen"])
        chosen = {p: analysis.choose_lr(records, p, lrs, selection)["lr"] for p in trained}
        self.log("chosen learning rates: " + ", ".join(f"{p} {lr:g}" for p, lr in chosen.items()))
        # seed-major: should the run be stopped, every placement has the same seeds done (the tests are paired)
        final = [(p, int(seed), chosen[p], "final") for seed in section["seeds"] for p in trained]
        return records + self._run_all(pool, final, sources, fp1)


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _as_completed(futures: Sequence[Future]):
    from concurrent.futures import as_completed

    return as_completed(futures) if futures else iter(())


def _executor(workers: int) -> Any:
    if workers <= 1:
        return InlineExecutor()
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")


def _versions() -> dict[str, str]:
    import lightning
    import peft
    import timm
    import torch
    import transformers

    return {m.__name__: m.__version__ for m in (torch, lightning, transformers, timm, peft)}


def run_experiment(
    config: Mapping[str, Any],
    force: str | None = None,
    report_only: bool = False,
    command: str = "python recipes/lora_placement/run.py",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or reuse) every stage, then write the report.

    Args:
        config: The experiment config (``experiment.yaml`` with overrides applied).
        force: ``stage0``, ``stage1`` or ``stage2``: rerun that stage and every later one, cached or not.
        report_only: Only rebuild the report from the cached stage-2 records (nothing trains).
        command: The command line shown above the table.
        log: Progress printer (default: ``print`` with a time stamp).

    Returns:
        ``{"ran": [...], "cached": [...], "sources": <spec overrides pointing at the stage-0/1 outputs>,
        "result": <results.json content>}`` (``ran`` and ``cached`` name the stages and runs).
    """
    log = log or (lambda msg: print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True))
    started, start = _now(), time.perf_counter()
    report_dir = config.get("report_dir", "recipes/lora_placement")
    placements = [placement_label(parse_placement(p)) for p in config["stage2"]["placements"]]
    meta: dict[str, Any] = _previous_meta(config) if report_only else {}
    meta = meta or {
        "command": command,
        "started": started,
        "wall_minutes": None,
        "complete": False,
        "cpus": os.cpu_count(),
        "workers": int(config.get("workers", 1)),
        "threads_per_worker": int(config.get("threads_per_worker", 1)),
        "model": config["model"]["name"],
        "stages": [],
        "versions": _versions(),
        "config": config,
    }
    done: list[dict[str, Any]] = []

    def on_record(record: dict[str, Any]) -> None:  # a partial results.json after every run: nothing is lost
        done.append(record)
        meta["wall_minutes"] = (time.perf_counter() - start) / 60
        report.write_results(report_dir, done, placements, meta)

    experiment = Experiment(config, force, log, on_record)
    sources: dict[str, Any] = {}
    if report_only:
        records = _cached_records(experiment)
    else:
        with _executor(experiment.workers) as pool:
            try:
                sources, fp1 = experiment.sources(pool)
                meta["stages"] = experiment.stage_lines
                records = experiment.stage2(pool, sources, fp1)
            except BaseException:  # a failed run stops the queue; finished runs stay cached and in results.json
                if isinstance(pool, ProcessPoolExecutor):
                    pool.shutdown(wait=False, cancel_futures=True)
                raise
        meta["wall_minutes"] = (time.perf_counter() - start) / 60
        meta["complete"] = True
    result = report.write_report(report_dir, records, placements, meta)
    log(f"report written to {report_dir} ({len(records)} runs)")
    return {"ran": experiment.ran, "cached": experiment.cached, "sources": sources, "result": result}


def _cached_records(experiment: Experiment) -> list[dict[str, Any]]:
    """The stored stage-2 records of the configured runs: baseline, sweep, and the final runs at the chosen LR."""
    section = experiment.config["stage2"]
    lrs = [float(x) for x in section["lrs"]]
    records = []
    for name in section["placements"]:
        label = placement_label(parse_placement(name))
        for path in sorted((experiment.out / "stage2" / label).glob("*.json")):
            record = json.loads(path.read_text())
            keep = {
                "baseline": record["seed"] == section["seeds"][0],
                "sweep": record["seed"] == section["sweep_seed"] and record["lr"] in lrs,
                "final": record["seed"] in section["seeds"],
            }
            if keep.get(record.get("phase"), False):
                records.append(record)
    selection = (experiment.config.get("analysis") or {}).get("selection", ["val_seen", "val_unseen"])
    chosen = {
        r["placement"]: analysis.choose_lr(records, r["placement"], lrs, selection)["lr"]
        for r in records
        if r["phase"] == "sweep"
    }
    return [r for r in records if r["phase"] != "final" or r["lr"] == chosen.get(r["placement"])]


def _previous_meta(config: Mapping[str, Any]) -> dict[str, Any]:
    path = Path(config.get("report_dir", "recipes/lora_placement")) / report.RESULTS_FILE
    return json.loads(path.read_text())["meta"] if path.exists() else {}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    parser.add_argument("--placements", nargs="+", help="stage-2 placements, e.g. none P V+L (default: the config's)")
    parser.add_argument("--seeds", nargs="+", type=int, help="stage-2 seeds (default: the config's)")
    parser.add_argument("--workers", type=int, help="parallel worker processes (default: the config's)")
    parser.add_argument("--force", choices=STAGES, help="rerun this stage and all later ones even if cached")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from cached stage-2 runs")
    parser.add_argument("--quick", action="store_true", help="a miniature run that proves the pipeline works (CI)")
    args = parser.parse_args(argv)
    config = apply_overrides(load_config(args.config, QUICK if args.quick else None), args.set)
    if args.placements:
        config["stage2"]["placements"] = args.placements
    if args.seeds:
        config["stage2"]["seeds"] = args.seeds
    if args.workers:
        config["workers"] = args.workers
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    command = f"python recipes/lora_placement/run.py {argv_text}".rstrip()
    run_experiment(config, force=args.force, report_only=args.report_only, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
