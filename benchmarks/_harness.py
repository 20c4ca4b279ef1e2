"""What the benchmark scripts share: their command line, their child processes, timing, ratios and JSON output.

Imported as ``_harness`` from benchmarks/ (the scripts run with their own folder first on ``sys.path``).

* :func:`benchmark_parser` gives every script ``--tiny`` and ``--json`` (and ``--threads`` / ``--seed`` where it
  computes), :func:`apply_tiny` puts the CI sizes in place, :func:`write_json` writes strict JSON.
* A script that measures each side in its own process re-invokes itself with :func:`run_child`: the child gets the
  fully resolved configuration as one JSON argument (``--child``) and answers with one JSON line on stdout, under the
  same thread count and offline settings as every other child.
* :func:`median_ratio` and :func:`verdict` turn paired measurements into the printed ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "TINY_MODEL",
    "apply_tiny",
    "benchmark_parser",
    "child_args",
    "child_payload",
    "median_ratio",
    "nan_to_none",
    "none_to_nan",
    "offline_env",
    "run_child",
    "timed",
    "tiny_note",
    "verdict",
    "write_json",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
# The model geometry of every ``--tiny`` run that builds the LLaVA layout of ``_llava.py`` (seconds on a CPU).
TINY_MODEL = {
    "image_size": 56,
    "patch_size": 14,
    "vision_dim": 32,
    "vision_depth": 3,
    "vision_heads": 2,
    "hidden": 32,
    "layers": 2,
    "heads": 2,
    "intermediate": 64,
    "vocab": 512,
}


def benchmark_parser(doc: str, *, compute: bool = True) -> argparse.ArgumentParser:
    """The parser every benchmark starts from: ``--tiny`` and ``--json``; with ``compute`` also ``--threads``/``--seed``.

    Args:
        doc: The script's docstring: its first paragraph is the description, the rest the epilog (``--help``).
        compute: Add ``--threads`` (default: the CPU count, at most 8) and ``--seed``.
    """
    summary, _, rest = doc.partition("\n\n")
    parser = argparse.ArgumentParser(
        description=summary, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes for CI (overrides the size options)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this path")
    if compute:
        parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1), help="torch threads")
        parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    return parser


def apply_tiny(args: argparse.Namespace, values: dict[str, Any]) -> argparse.Namespace:
    """With ``--tiny``, overwrite the options named in ``values`` (the CI sizes); returns ``args``."""
    if args.tiny:
        for key, value in values.items():
            setattr(args, key, value)
    return args


def tiny_note(args: argparse.Namespace) -> None:
    """Say, on a ``--tiny`` run, that its ratios mean nothing."""
    if args.tiny:
        print("note: --tiny is a smoke test; its sizes are too small for the ratios to mean anything")


def nan_to_none(value: Any) -> Any:
    """Make a result strictly JSON-serialisable (NaN is not valid JSON)."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def none_to_nan(value: Any) -> Any:
    """Inverse of :func:`nan_to_none`."""
    if isinstance(value, dict):
        return {k: none_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [none_to_nan(v) for v in value]
    return float("nan") if value is None else value


def write_json(path: str | os.PathLike | None, result: dict[str, Any]) -> None:
    """Write ``result`` to ``path`` as strict JSON (NaN as null); nothing when ``path`` is None."""
    if path is not None:
        Path(path).write_text(json.dumps(nan_to_none(result), indent=2, default=str))


def offline_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a child: offline hub, the repository importable, ``threads`` OpenMP threads."""
    env = dict(os.environ, **extra)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # the same thread count in every child
    return env


def child_payload(args: argparse.Namespace, **role: Any) -> dict[str, Any]:
    """The resolved configuration (every option, after ``--tiny``) plus the child's role, for :func:`run_child`."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("child", "json")}
    return {**config, **role}


def run_child(script: str, payload: dict[str, Any], threads: int, **env: str) -> dict[str, Any]:
    """Run ``script --child <payload as JSON>`` in a fresh process; return the JSON of its last stdout line.

    Raises:
        RuntimeError: the child failed (its exit status and the end of its stderr).
    """
    cmd = [sys.executable, os.path.abspath(script), "--child", json.dumps(nan_to_none(payload))]
    proc = subprocess.run(cmd, env=offline_env(threads, **env), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        what = {k: payload[k] for k in ("role", "side", "variant") if k in payload}
        raise RuntimeError(f"child {what} of {script} failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
    return none_to_nan(json.loads(proc.stdout.strip().splitlines()[-1]))


def child_args(args: argparse.Namespace) -> argparse.Namespace:
    """In a child: the configuration its parent resolved (``--child`` JSON) as a namespace."""
    return argparse.Namespace(**json.loads(args.child), child=args.child, json=None)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(fn(), wall seconds, CPU seconds of all threads of this process)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - c0


def median_ratio(pairs: Iterable[tuple[float, float]]) -> float:
    """Median over paired measurements of ``a / b`` (pairs with ``b <= 0`` skipped; NaN when none is left)."""
    ratios = [a / b for a, b in pairs if b > 0]
    return statistics.median(ratios) if ratios else float("nan")


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    """``PASS`` / ``MISS`` of ``value`` against ``target`` (``n/a`` for NaN)."""
    if math.isnan(value):
        return "n/a"
    return "PASS" if (value >= target if higher_is_better else value <= target) else "MISS"
