"""Every script under benchmarks/ still runs: once, with ``--tiny`` sizes, in a subprocess.

Benchmarks are not tests: the tiny sizes prove the script works end to end, not that the targets are met (the
README's table holds the measured ratios). Scripts added later are picked up by the glob; a new script is expected to
accept ``--tiny`` and ``--json PATH`` and to print ``... ratio ...: <number>`` lines, like ``benchmarks/loss.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))

_NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
# Lines each script must print. A script not listed here must print at least one ratio line.
EXPECTED_LINES: dict[str, list[str]] = {
    # at --tiny sizes the allocations can stay below ru_maxrss resolution: the memory ratio may print as nan
    "loss.py": [rf"^memory ratio ours/hf: +(?:{_NUMBER}|nan)", rf"^time ratio ours/hf: +{_NUMBER}"],
    "train_step.py": [
        rf"^memory ratio ours/hf: +(?:{_NUMBER}|nan)",
        rf"^time ratio ours/hf: +{_NUMBER}",
        r"^time split, median s",
    ],
    # same weights on both sides: in float64 both generate the same tokens (and prompt logits within rounding)
    "generate.py": [
        rf"^tokens/s ratio ours/hf: +{_NUMBER}",
        r"^same tokens \(float64\): yes ",
        r"^prompt logits \(float64\): .*\(<= 1e-6: yes\)",
    ],
    # the quickstart benchmark times the recipe against its own targets (no peer): wall time of both runs
    "roofline.py": [
        rf"^fraction of peak \(float32\): +{_NUMBER}",
        rf"^fraction of peak \(bf16\+ckpt\): +{_NUMBER}",
        r"^  self CPU time: matmul ",
    ],
    "quickstart.py": [rf"^sighted +wall +{_NUMBER} s", rf"^blind +wall +{_NUMBER} s"],
    # the tiny model's peaks can stay below ru_maxrss resolution: the ratio may print as nan
    "dpo_memory.py": [rf"^memory ratio adapters/copy: +(?:{_NUMBER}|nan)"],
    # start-up times against their targets (no peer); --tiny gives `zoo` a stand-in table
    "cli_startup.py": [
        rf"^lightning-mm --help +median +{_NUMBER} s .*target 2.0 s: (?:PASS|MISS)",
        rf"^lightning-mm zoo +median +{_NUMBER} s .*target 2.0 s: (?:PASS|MISS)",
        rf"^import lightning_mm +median +{_NUMBER} s",
    ],
}
DEFAULT_LINES = [rf"ratio[^\n:]*: +{_NUMBER}"]
SLOW = {"quickstart.py"}  # about a minute on 2 cores: two short Lightning fits
TIMEOUT_S = {"quickstart.py": 900}


def _param(script: Path):
    marks = [pytest.mark.slow] if script.name in SLOW else []
    return pytest.param(script, id=script.name, marks=marks)


def test_benchmarks_are_found():
    names = {p.name for p in SCRIPTS}
    assert {"loss.py", "train_step.py"} <= names


@pytest.mark.parametrize("script", [_param(p) for p in SCRIPTS])
def test_benchmark_runs_tiny(script: Path, tmp_path: Path):
    out_json = tmp_path / "result.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(script), "--tiny", "--json", str(out_json)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S.get(script.name, 600),
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script.name} --tiny exited {proc.returncode}:\n{output[-4000:]}"
    for pattern in EXPECTED_LINES.get(script.name, DEFAULT_LINES):
        assert re.search(pattern, proc.stdout, flags=re.M), (
            f"{script.name} --tiny did not print a line matching {pattern!r}:\n{proc.stdout[-4000:]}"
        )
    assert out_json.is_file(), f"{script.name} --tiny --json wrote no file"
    result = json.loads(out_json.read_text())
    if script.name == "roofline.py":
        _check_roofline(result)


def _check_roofline(result: dict) -> None:
    """The FLOP count holds the CPU attention kernels and, under activation checkpointing, the recomputed forward."""
    plain, ckpt = result["float32"]["flops"], result["bf16+ckpt"]["flops"]
    assert plain["attention"] > 0 and ckpt["attention"] > plain["attention"]  # attention forward runs again
    assert ckpt["total"] > plain["total"]
    for setting in ("float32", "bf16+ckpt"):
        res = result[setting]
        assert res["matmul"]["shapes"] and res["matmul"]["peak"] > 0
        assert 0 < res["fraction_of_peak"] == pytest.approx(res["achieved"] / res["matmul"]["peak"])
        assert sum(res["profile"]["share"].values()) == pytest.approx(1.0)
