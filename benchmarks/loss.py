"""Benchmark: lightning_mm's fused ``linear_cross_entropy`` vs. full-logits transformers and Cut Cross-Entropy.

Every side runs forward + backward (gradients w.r.t. the hidden states and the ``lm_head`` weight) on the same random
LLaVA-like batch: every row starts with ``--image-tokens`` unsupervised image positions and has exactly
``--supervised`` supervised targets after them.

* ``hf``:   ``logits = hidden @ weight.T`` (full ``(B, T, V)`` logits), then ``transformers``' ``ForCausalLMLoss``.
* ``ours``: ``lightning_mm.loss.linear_cross_entropy(hidden, weight, labels)``.
* ``cce``:  Apple's Cut Cross-Entropy, ``cut_cross_entropy.linear_cross_entropy(hidden, weight, labels,
  impl="torch_compile", shift=True)`` (its CPU implementation: the supervised rows' logits and a compiled
  cross-entropy). An optional benchmark dependency (``pip install cut-cross-entropy``; ``torch.compile`` needs a C++
  compiler on the CPU): where it is not importable, or its run fails, the side is reported as skipped, not an error.
  ``--tiny`` leaves it out unless ``--cce on`` (its compilation alone takes about a minute on two cores).

Peak memory: each side in its own subprocess (this script re-invoked with ``--side``), on CPU, with the same thread
count. Peak memory is the growth of ``ru_maxrss`` (a high-water mark) during a forward + backward over a baseline taken
right before it, after the inputs are allocated and the thread pool is warmed up on small tensors (and, for ``cce``,
after its compilation). On Linux the high-water mark is reset to the resident size first (``/proc/self/clear_refs``),
so nothing allocated and freed earlier can mask the growth. Two steps are measured:

* first step (the target): the first full-size forward + backward, including one-off buffers that libraries such as
  BLAS allocate and cache for a new problem size;
* steady state: the second step, as every later training step sees it (only where the reset is available).

The process's whole peak resident set (``ru_maxrss``, imports included) is printed beside it.

Time: ``ours``' subprocess, once its memory is measured, holds every side on the same inputs and runs their steps
interleaved, ``--repeats`` rounds, the order of the sides rotating each round, so that load from other jobs falls on
all sides alike; a ratio is the median over the rounds of the per-round ratio. The same process times the three bare GEMMs of the supervised rows
(logits, gradient of the hidden rows, gradient of the weight: ``N x H x V`` each, into preallocated outputs), the
floor that any exact implementation at this shape pays. The machine's load average (``os.getloadavg``) before and
after each measurement is printed.

Usage::

    python benchmarks/loss.py                 # full size
    python benchmarks/loss.py --tiny          # seconds, for CI
    python benchmarks/loss.py --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

from _harness import (
    apply_tiny,
    benchmark_parser,
    child_args,
    child_payload,
    median_ratio,
    nan_to_none,
    run_child,
    tiny_note,
    verdict,
    write_json,
)
from _memory import maxrss_mib, peak_growth

MEMORY_TARGET = 1 / 8  # ours/hf peak memory
TIME_TARGET = 0.4  # ours/hf median wall time
CCE_MEMORY_TARGET = 1.0  # ours/cce peak memory
CCE_TIME_TARGET = 0.9  # ours/cce median wall time
TINY = {"batch": 2, "seq": 48, "image_tokens": 32, "hidden": 32, "vocab": 512, "supervised": 8, "repeats": 3}
SIDES = ("hf", "ours", "cce")
NAN = float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=704)
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--supervised", type=int, default=100, help="supervised targets per row")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (every side once per round)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="linear_cross_entropy chunk size (default: its own)"
    )
    parser.add_argument(
        "--cce",
        choices=["auto", "on", "off"],
        default="auto",
        help="the Cut Cross-Entropy side; auto: on when installed, off with --tiny (its compilation takes a minute)",
    )
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_args(args)
    apply_tiny(args, TINY)
    if args.image_tokens < 1 or args.supervised < 1 or args.image_tokens + args.supervised > args.seq:
        parser.error("need image-tokens >= 1, supervised >= 1 and image-tokens + supervised <= seq")
    return args


def make_step(side: str, args: argparse.Namespace):
    """The forward + loss of one side: ``step(hidden, weight, labels) -> loss``."""
    if side == "hf":
        from transformers.loss.loss_utils import ForCausalLMLoss

        def step(hidden, weight, labels):
            logits = hidden @ weight.T  # (B, T, V)
            return ForCausalLMLoss(logits, labels, vocab_size=weight.shape[0])

    elif side == "cce":
        from cut_cross_entropy import linear_cross_entropy as cce

        def step(hidden, weight, labels):
            return cce(hidden, weight, labels, impl="torch_compile", shift=True)

    else:
        from lightning_mm.loss import linear_cross_entropy

        kwargs = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}

        def step(hidden, weight, labels):
            return linear_cross_entropy(hidden, weight, labels, **kwargs)

    return step


def make_inputs(args: argparse.Namespace, batch, seq, image_tokens, hidden_size, vocab, supervised):
    """Random ``(hidden, weight, labels)``; ``supervised`` consecutive targets per row after the image tokens."""
    import torch

    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    hidden = torch.randn(batch, seq, hidden_size, generator=gen).to(dtype).requires_grad_()  # (B, T, H)
    weight = torch.randn(vocab, hidden_size, generator=gen).div_(hidden_size**0.5).to(dtype)  # (V, H)
    weight.requires_grad_()
    labels = torch.full((batch, seq), -100, dtype=torch.long)  # (B, T)
    tokens = torch.randint(0, vocab, (batch, seq), generator=gen)
    for row in range(batch):
        start = int(torch.randint(image_tokens, seq - supervised + 1, (1,), generator=gen))
        labels[row, start : start + supervised] = tokens[row, start : start + supervised]
    return hidden, weight, labels


def full_inputs(args: argparse.Namespace):
    return make_inputs(args, args.batch, args.seq, args.image_tokens, args.hidden, args.vocab, args.supervised)


def fwd_bwd(step, hidden, weight, labels):
    hidden.grad = None
    weight.grad = None
    loss = step(hidden, weight, labels)
    loss.backward()
    return loss.detach()


def warm_up(step, args: argparse.Namespace) -> None:
    """Start the thread pool, BLAS (and compilation) on small inputs that still run multi-threaded."""
    fwd_bwd(step, *make_inputs(args, 1, 256, 128, args.hidden, min(args.vocab, 2048), 128))


def run_side(args: argparse.Namespace) -> dict:
    """Peak memory (and loss, gradient norms) of one side in this process; returns a JSON-serialisable dict."""
    import torch

    torch.set_num_threads(args.threads)
    step = make_step(args.side, args)
    # One-off allocations of the thread pool, BLAS and compilation land in the baseline; buffers BLAS sizes for the
    # full problem still land in the first step.
    warm_up(step, args)
    hidden, weight, labels = full_inputs(args)

    def measure_peak() -> dict:
        """One forward + backward: peak growth MiB, high-water slack MiB, whether the reset worked, the loss."""
        return peak_growth(lambda: fwd_bwd(step, hidden, weight, labels))

    # Cold: the first full-size step, including one-off buffers that libraries (e.g. BLAS packing) cache.
    first = measure_peak()
    # Steady state: a second step, as every later training step sees it; needs the high-water-mark reset.
    steady = measure_peak() if first["reset"] else {"peak_mib": NAN, "slack_mib": 0.0}
    return {
        "side": args.side,
        "loss": float(first["result"]),
        "peak_mib": first["peak_mib"],
        "peak_steady_mib": steady["peak_mib"],
        "process_peak_mib": maxrss_mib(),
        "baseline_slack_mib": max(first["slack_mib"], steady["slack_mib"]),
        "peak_reset": first["reset"],
        "grad_hidden_norm": float(hidden.grad.float().norm()),
        "grad_weight_norm": float(weight.grad.float().norm()),
    }


def run_timing(args: argparse.Namespace) -> dict:
    """Interleaved wall times of ``args.timing_sides`` and of the three bare GEMMs, in this process."""
    import torch

    torch.set_num_threads(args.threads)
    hidden, weight, labels = full_inputs(args)
    steps = {side: make_step(side, args) for side in args.timing_sides}
    for step in steps.values():
        warm_up(step, args)

    # The three GEMMs of the N supervised rows, into preallocated outputs: the floor of any exact implementation.
    rows = int((labels[:, 1:] != -100).sum())
    with torch.no_grad():
        h = hidden.detach().reshape(-1, args.hidden)[:rows].clone()  # (N, H)
        w = weight.detach()  # (V, H)
        logits = torch.empty(rows, args.vocab, dtype=w.dtype)  # (N, V)
        grad_h = torch.empty_like(h)  # (N, H)
        grad_w = torch.empty_like(w)  # (V, H)

    def gemms():
        with torch.no_grad():
            torch.mm(h, w.t(), out=logits)  # (N, V) logits
            torch.mm(logits, w, out=grad_h)  # (N, H) gradient of the hidden rows
            torch.mm(logits.t(), h, out=grad_w)  # (V, H) gradient of the weight

    runs = {side: (lambda s=step: fwd_bwd(s, hidden, weight, labels)) for side, step in steps.items()}
    runs["gemm"] = gemms
    for run in runs.values():
        run()  # the first full-size step of each (BLAS buffers, recompilation) is not timed
    times = {name: [] for name in runs}
    names = list(runs)
    for rnd in range(args.repeats):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order every round
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {"times_s": times}


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else NAN


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        result = run_side(args)
        if getattr(args, "timing_sides", None):
            result.update(run_timing(args))  # after the memory measurement of this side
        print(json.dumps(nan_to_none(result)))
        return 0

    skipped: dict[str, str] = {}
    if args.cce == "off" or (args.cce == "auto" and args.tiny):
        skipped["cce"] = f"--cce {args.cce}" + (" with --tiny" if args.cce == "auto" else "")
    elif importlib.util.find_spec("cut_cross_entropy") is None:
        skipped["cce"] = "cut_cross_entropy is not installed"
    load = {"before": _load()}
    results: dict[str, dict] = {}
    for side in ("hf", "cce"):  # the peers' memory, each in its own process
        if side in skipped:
            continue
        try:
            results[side] = run_child(__file__, child_payload(args, side=side), args.threads)
        except RuntimeError as err:
            if side != "cce":
                raise
            last = str(err).strip().splitlines()[-1]
            skipped["cce"] = f"its run failed: {last}"
    load["after_memory"] = _load()
    # Ours' memory, then (in the same process, after the memory is read) the interleaved timing of every side.
    sides = ["ours", *results]
    ours = run_child(__file__, child_payload(args, side="ours", timing_sides=sides), args.threads)
    timing = ours.pop("times_s")
    results = {side: (ours if side == "ours" else results[side]) for side in SIDES if side in sides}
    load["after_time"] = _load()
    medians = {name: statistics.median(t) for name, t in timing.items()}

    def mem_ratio(peer: str, key: str) -> float:
        if peer not in results or not results[peer][key] > 0:
            return NAN  # NaN (also) when the reset is unsupported
        return results["ours"][key] / results[peer][key]

    def time_ratio(side: str, peer: str) -> float:
        if side not in timing or peer not in timing:
            return NAN
        return median_ratio(zip(timing[side], timing[peer], strict=True))

    ratios = {
        peer: {
            "memory": mem_ratio(peer, "peak_mib"),
            "memory_steady": mem_ratio(peer, "peak_steady_mib"),
            "time": time_ratio("ours", peer),
        }
        for peer in ("hf", "cce")
    }
    floor = {side: time_ratio(side, "gemm") for side in results}

    tiny_note(args)
    print(
        f"shape: B={args.batch} T={args.seq} image_tokens={args.image_tokens} H={args.hidden} V={args.vocab} "
        f"supervised/row={args.supervised} dtype={args.dtype} threads={args.threads} repeats={args.repeats} (CPU)"
    )
    print(
        f"load average: {load['before']:.2f} before, {load['after_memory']:.2f} after the peers' memory runs, "
        f"{load['after_time']:.2f} after ours' memory and the timed rounds"
    )
    header = f"{'side':<6} {'loss':>10} {'peak MiB (1st step)':>20} {'peak MiB (steady)':>18} {'process MiB':>12}"
    print(f"{header} {'median ms':>10} {'/ GEMMs':>8}")
    for side, res in results.items():
        print(
            f"{side:<6} {res['loss']:>10.5f} {res['peak_mib']:>20.1f} {res['peak_steady_mib']:>18.1f} "
            f"{res['process_peak_mib']:>12.1f} {medians[side] * 1e3:>10.1f} {floor[side]:>8.3f}"
        )
    print(f"{'GEMMs':<6} {'':>10} {'':>20} {'':>18} {'':>12} {medians['gemm'] * 1e3:>10.1f} {1.0:>8.3f}")
    print("(GEMMs: the three bare N x H x V matrix products of the supervised rows, the floor of an exact loss)")
    for side, why in skipped.items():
        print(f"{side}: skipped ({why})")
    for side, res in results.items():
        if side != "ours":
            print(f"|loss ours - {side}| = {abs(results['ours']['loss'] - res['loss']):.2e}")
        if res["baseline_slack_mib"] > 1.0:
            print(f"warning: {side} peak may be underestimated by up to {res['baseline_slack_mib']:.1f} MiB")
    targets = {"hf": (MEMORY_TARGET, TIME_TARGET), "cce": (CCE_MEMORY_TARGET, CCE_TIME_TARGET)}
    for peer, (mem_target, time_target) in targets.items():
        if peer in skipped:
            continue
        r = ratios[peer]
        print(
            f"memory ratio ours/{peer}: {r['memory']:.4f} (target <= {mem_target:.3f}) "
            f"{verdict(r['memory'], mem_target)}"
        )
        print(f"  steady-state step:  {r['memory_steady']:.4f} {verdict(r['memory_steady'], mem_target)}")
        print(
            f"time ratio ours/{peer}:   {r['time']:.4f} (target <= {time_target:.3f}) {verdict(r['time'], time_target)}"
        )

    write_json(
        args.json,
        {
            "config": {k: v for k, v in vars(args).items() if k not in ("child", "json")},
            **results,
            "skipped": skipped,
            "load_average": load,
            "times_s": timing,
            "median_s": medians,
            "time_over_gemms": floor,
            "ratios": ratios,
            "targets": {peer: {"memory": m, "time": t} for peer, (m, t) in targets.items()},
            # the keys of the ours/hf comparison, as before
            "memory_ratio": ratios["hf"]["memory"],
            "memory_ratio_steady": ratios["hf"]["memory_steady"],
            "time_ratio": ratios["hf"]["time"],
            "memory_target": MEMORY_TARGET,
            "time_target": TIME_TARGET,
            "memory_pass": ratios["hf"]["memory"] <= MEMORY_TARGET,
            "memory_steady_pass": ratios["hf"]["memory_steady"] <= MEMORY_TARGET,
            "time_pass": ratios["hf"]["time"] <= TIME_TARGET,
            "loss_abs_diff": abs(results["ours"]["loss"] - results["hf"]["loss"]),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
