"""Start-up time of the ``lightning-mm`` command: ``--help``, ``zoo`` and ``import lightning_mm``, fresh processes.

Each command runs ``--repeats`` times in a new Python process (``python -m lightning_mm.cli ...`` of this checkout),
interleaved, and the median wall time is compared with its target: ``lightning-mm --help`` and ``lightning-mm zoo``
under 2 s on a quiet machine. ``python -c pass`` (the interpreter alone) is measured alongside as the floor.

``lightning-mm zoo`` reads its table from a cache file once it has been computed (``lightning_mm.commands.zoo``): the
first run in a fresh cache folder (``cold``, computed and written once, every zoo entry built on the meta device) is
timed on its own, then the cached runs are the ones compared with the target. ``--tiny`` (CI) runs each command once
and gives ``zoo`` a stand-in table instead of computing the real one.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import benchmark_parser, offline_env, tiny_note, verdict, write_json

TARGET_S = 2.0
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import lightning_mm": ["-c", "import lightning_mm"],
    "lightning-mm --help": ["-m", "lightning_mm.cli", "--help"],
    "lightning-mm zoo": ["-m", "lightning_mm.cli", "zoo"],
}
TARGETS = {"lightning-mm --help": TARGET_S, "lightning-mm zoo": TARGET_S}
STAND_IN_ROW = {
    "name": "tiny",
    "family": "llava",
    "vision": "vit_tiny_patch16_224",
    "llm": "(llama, 2L)",
    "params": 489472,
    "img tokens": "16",
    "template": "chatml",
    "description": "stand-in row of --tiny",
}


def run_once(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one fresh ``python <args>`` (its output discarded; a failure raises)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = benchmark_parser(__doc__, compute=False)
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per command")
    args = parser.parse_args()
    repeats = 1 if args.tiny else args.repeats
    tiny_note(args)
    with tempfile.TemporaryDirectory() as cache:
        env = offline_env(LIGHTNING_MM_CACHE=cache)
        result: dict[str, dict] = {}
        if args.tiny:
            stand_in = {"rows": {"tiny": STAND_IN_ROW}}
            code = "from lightning_mm.commands.zoo import cache_path; import sys; print(cache_path())"
            path = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            Path(path.stdout.strip()).write_text(json.dumps(stand_in))
        else:
            cold = run_once(COMMANDS["lightning-mm zoo"], env)
            result["lightning-mm zoo (cold cache)"] = {"runs": [cold], "median_s": cold}
            print(f"{'lightning-mm zoo (cold cache)':<28} once   {cold:7.3f} s  (computes and caches the table)")
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(repeats):  # interleaved: a load change touches every command alike
            for name, command in COMMANDS.items():
                times[name].append(run_once(command, env))
    for name, runs in times.items():
        median = statistics.median(runs)
        line = f"{name:<28} median {median:7.3f} s  (min {min(runs):.3f} s, {len(runs)} runs"
        entry = {"runs": runs, "median_s": median}
        if name in TARGETS:
            entry |= {"target_s": TARGETS[name], "ratio_to_target": median / TARGETS[name]}
            entry["verdict"] = verdict(median, TARGETS[name])
            line += f"; target {TARGETS[name]:.1f} s: {entry['verdict']}"
        print(line + ")")
        result[name] = entry
    for name in TARGETS:
        print(f"time ratio {name} / target: {result[name]['ratio_to_target']:.3f}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
