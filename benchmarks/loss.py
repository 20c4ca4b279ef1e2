"""Benchmark: full-logits causal LM loss (transformers) vs. lightning_mm's fused ``linear_cross_entropy``.

Both sides run forward + backward (gradients w.r.t. the hidden states and the ``lm_head`` weight) on the same random
LLaVA-like batch: every row starts with ``--image-tokens`` unsupervised image positions and has exactly
``--supervised`` supervised targets after them.

* ``hf``:   ``logits = hidden @ weight.T`` (full ``(B, T, V)`` logits), then ``transformers``' ``ForCausalLMLoss``.
* ``ours``: ``lightning_mm.loss.linear_cross_entropy(hidden, weight, labels)``.

Each side runs in its own subprocess (this script re-invoked with ``--side``), on CPU, with the same thread count.
Peak memory is the growth of ``ru_maxrss`` (a high-water mark) during a forward + backward over a baseline taken right
before it, after the inputs are allocated and the thread pool is warmed up on small tensors. On Linux the high-water
mark is reset to the resident size first (``/proc/self/clear_refs``), so nothing allocated and freed earlier can mask
the growth. Two steps are measured:

* first step (the target): the first full-size forward + backward, including one-off buffers that libraries such as
  BLAS allocate and cache for a new problem size;
* steady state: the second step, as every later training step sees it (only where the reset is available).

The wall time is the median over ``--repeats`` further iterations.

Usage::

    python benchmarks/loss.py                 # full size
    python benchmarks/loss.py --tiny          # seconds, for CI
    python benchmarks/loss.py --json out.json
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

from _memory import current_rss_mib, maxrss_mib, nan_to_none, reset_peak_rss

MEMORY_TARGET = 1 / 8  # ours/hf peak memory
TIME_TARGET = 0.4  # ours/hf median wall time
TINY = {"batch": 2, "seq": 48, "image_tokens": 32, "hidden": 32, "vocab": 512, "supervised": 8, "repeats": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=704)
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--supervised", type=int, default=100, help="supervised targets per row")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="linear_cross_entropy chunk size (default: its own)"
    )
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes for CI (overrides the size options)")
    parser.add_argument("--json", type=str, default=None, help="write the results to this path")
    parser.add_argument("--side", choices=["hf", "ours"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    if args.image_tokens < 1 or args.supervised < 1 or args.image_tokens + args.supervised > args.seq:
        parser.error("need image-tokens >= 1, supervised >= 1 and image-tokens + supervised <= seq")
    return args


def run_side(args: argparse.Namespace) -> dict:
    """Measure one side in this process; returns a JSON-serialisable dict."""
    import torch

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.side == "hf":
        from transformers.loss.loss_utils import ForCausalLMLoss

        def step(hidden, weight, labels):
            logits = hidden @ weight.T  # (B, T, V)
            return ForCausalLMLoss(logits, labels, vocab_size=weight.shape[0])

    else:
        from lightning_mm.loss import linear_cross_entropy

        kwargs = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}

        def step(hidden, weight, labels):
            return linear_cross_entropy(hidden, weight, labels, **kwargs)

    def make_inputs(batch, seq, image_tokens, hidden_size, vocab, supervised):
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

    def fwd_bwd(hidden, weight, labels):
        hidden.grad = None
        weight.grad = None
        loss = step(hidden, weight, labels)
        loss.backward()
        return loss.detach()

    # Start the thread pool and BLAS on small inputs that still run multi-threaded, so that their one-off
    # allocations are part of the baseline. Buffers BLAS sizes for the full problem still land in the first step.
    warm_size = min(args.vocab, 2048)
    fwd_bwd(*make_inputs(1, 256, 128, args.hidden, warm_size, 128))

    hidden, weight, labels = make_inputs(
        args.batch, args.seq, args.image_tokens, args.hidden, args.vocab, args.supervised
    )

    def measure_peak() -> tuple[float, float, bool, torch.Tensor]:
        """Run one forward + backward; return (peak growth MiB, hidden high-water slack MiB, reset ok, loss)."""
        hidden.grad = None
        weight.grad = None
        reset = reset_peak_rss()
        baseline = maxrss_mib()
        # High-water mark above the resident size at the baseline: growth below it would go unseen.
        slack = max(0.0, baseline - current_rss_mib())
        loss = fwd_bwd(hidden, weight, labels)
        return maxrss_mib() - baseline, slack, reset, loss

    # Cold: the first full-size step, including one-off buffers that libraries (e.g. BLAS packing) cache.
    peak_first, slack_first, peak_reset, loss = measure_peak()
    # Steady state: a second step, as every later training step sees it; needs the high-water-mark reset.
    peak_steady, slack_steady, _, _ = measure_peak() if peak_reset else (float("nan"), float("nan"), False, None)

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fwd_bwd(hidden, weight, labels)
        times.append(time.perf_counter() - start)

    return {
        "side": args.side,
        "loss": float(loss),
        "peak_mib": peak_first,
        "peak_steady_mib": peak_steady,
        "baseline_slack_mib": max(slack_first, slack_steady) if peak_reset else slack_first,
        "peak_reset": peak_reset,
        "median_s": statistics.median(times),
        "times_s": times,
        "grad_hidden_norm": float(hidden.grad.float().norm()),
        "grad_weight_norm": float(weight.grad.float().norm()),
    }


def launch(side: str, argv: list[str]) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = argv[argv.index("--threads") + 1]  # same thread count on both sides
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--side", side]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"side {side!r} failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.side is not None:
        print(json.dumps(run_side(args)))
        return 0

    # The children get the fully resolved configuration (after --tiny) and no --json.
    child_argv = []
    for key in ("batch", "seq", "image_tokens", "hidden", "vocab", "supervised", "repeats", "dtype", "threads", "seed"):
        child_argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.chunk_size is not None:
        child_argv += ["--chunk-size", str(args.chunk_size)]
    hf = launch("hf", child_argv)
    ours = launch("ours", child_argv)

    def ratio(key: str) -> float:
        return ours[key] / hf[key] if hf[key] > 0 else float("nan")  # NaN (also) when the reset is unsupported

    mem_ratio, steady_ratio, time_ratio = ratio("peak_mib"), ratio("peak_steady_mib"), ratio("median_s")
    loss_diff = abs(ours["loss"] - hf["loss"])

    def verdict(ratio: float, target: float) -> str:
        if math.isnan(ratio):
            return "n/a"
        return "PASS" if ratio <= target else "MISS"

    if args.tiny:
        print("note: --tiny is a smoke test; its sizes are too small for the ratios to mean anything")

    print(
        f"shape: B={args.batch} T={args.seq} image_tokens={args.image_tokens} H={args.hidden} V={args.vocab} "
        f"supervised/row={args.supervised} dtype={args.dtype} threads={args.threads} repeats={args.repeats} (CPU)"
    )
    print(f"{'side':<6} {'loss':>10} {'peak MiB (1st step)':>20} {'peak MiB (steady)':>18} {'median ms':>10}")
    for res in (hf, ours):
        print(
            f"{res['side']:<6} {res['loss']:>10.5f} {res['peak_mib']:>20.1f} {res['peak_steady_mib']:>18.1f} "
            f"{res['median_s'] * 1e3:>10.1f}"
        )
    print(f"|loss ours - hf| = {loss_diff:.2e}")
    for res in (hf, ours):
        if res["baseline_slack_mib"] > 1.0:
            print(f"warning: {res['side']} peak may be underestimated by up to {res['baseline_slack_mib']:.1f} MiB")
    print(f"memory ratio ours/hf: {mem_ratio:.4f} (target <= {MEMORY_TARGET:.3f}) {verdict(mem_ratio, MEMORY_TARGET)}")
    print(f"  steady-state step:  {steady_ratio:.4f} {verdict(steady_ratio, MEMORY_TARGET)}")
    print(f"time ratio ours/hf:   {time_ratio:.4f} (target <= {TIME_TARGET:.3f}) {verdict(time_ratio, TIME_TARGET)}")

    if args.json is not None:
        result = {
            "config": {k: v for k, v in vars(args).items() if k not in ("side", "json")},
            "hf": hf,
            "ours": ours,
            "memory_ratio": mem_ratio,
            "memory_ratio_steady": steady_ratio,
            "time_ratio": time_ratio,
            "memory_target": MEMORY_TARGET,
            "time_target": TIME_TARGET,
            "memory_pass": mem_ratio <= MEMORY_TARGET,
            "memory_steady_pass": steady_ratio <= MEMORY_TARGET,
            "time_pass": time_ratio <= TIME_TARGET,
            "loss_abs_diff": loss_diff,
        }
        with open(args.json, "w") as fh:
            json.dump(nan_to_none(result), fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
