"""Time the quickstart recipe and its image-blind control, exactly as a user runs them.

Usage:
    python benchmarks/quickstart.py                 # full recipe: sighted run + image-blind control
    python benchmarks/quickstart.py --tiny          # CI smoke: a few steps, only proves the pipeline runs

Prints wall time and held-out metrics of each run, and checks the targets
(sighted >= 0.97 answer accuracy within 300 s; blind <= 0.40).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time

from _harness import REPO_ROOT, benchmark_parser, verdict, write_json

RECIPE = REPO_ROOT / "recipes" / "quickstart.yaml"


def run(extra: list[str], workdir: str) -> tuple[float, dict[str, float]]:
    cmd = [sys.executable, "-m", "lightning_mm.cli", "fit", "--config", str(RECIPE), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    metrics = {k: float(v) for k, v in re.findall(r"^\s+(val/\S+)\s+([0-9.]+)$", proc.stdout, flags=re.M)}
    return wall, metrics


def main() -> None:
    args = benchmark_parser(__doc__, compute=False).parse_args()
    extra = ["--trainer.enable_progress_bar=false"]
    if args.tiny:
        extra += [
            "--data.init_args.train_samples=64",
            "--data.init_args.val_samples=32",
            "--trainer.val_check_interval=2",
        ]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in (("sighted", []), ("blind", ["--data.init_args.blind_images=true"])):
            wall, metrics = run(extra + flags, tmp)
            results[name] = {"wall_s": round(wall, 1), **metrics}
            print(f"{name:8s} wall {wall:7.1f} s  " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    if not args.tiny:
        targets = (  # (what, value, target, higher is better)
            ("sighted accuracy >= 0.97", results["sighted"].get("val/answer_accuracy", 0.0), 0.97, True),
            ("sighted wall time <= 300 s", results["sighted"]["wall_s"], 300, False),
            ("blind accuracy <= 0.40", results["blind"].get("val/answer_accuracy", 1.0), 0.40, False),
        )
        for what, value, target, higher in targets:
            print(f"target {what}: {verdict(value, target, higher)}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
