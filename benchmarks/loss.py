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
import statistics
import sys
import time

from _harness import (
    apply_tiny,
    benchmark_parser,
    child_args,
    child_payload,
    nan_to_none,
    run_child,
    tiny_note,
    verdict,
    write_json,
)
from _memory import peak_growth

MEMORY_TARGET = 1 / 8  # ours/hf peak memory
TIME_TARGET = 0.4  # ours/hf median wall time
TINY = {"batch": 2, "seq": 48, "image_tokens": 32, "hidden": 32, "vocab": 512, "supervised": 8, "repeats": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
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
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_args(args)
    apply_tiny(args, TINY)
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

    def measure_peak() -> dict:
        """One forward + backward: peak growth MiB, high-water slack MiB, whether the reset worked, the loss."""
        hidden.grad = None
        weight.grad = None
        return peak_growth(lambda: fwd_bwd(hidden, weight, labels))

    # Cold: the first full-size step, including one-off buffers that libraries (e.g. BLAS packing) cache.
    first = measure_peak()
    # Steady state: a second step, as every later training step sees it; needs the high-water-mark reset.
    steady = measure_peak() if first["reset"] else {"peak_mib": float("nan"), "slack_mib": 0.0}

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fwd_bwd(hidden, weight, labels)
        times.append(time.perf_counter() - start)

    return {
        "side": args.side,
        "loss": float(first["result"]),
        "peak_mib": first["peak_mib"],
        "peak_steady_mib": steady["peak_mib"],
        "baseline_slack_mib": max(first["slack_mib"], steady["slack_mib"]),
        "peak_reset": first["reset"],
        "median_s": statistics.median(times),
        "times_s": times,
        "grad_hidden_norm": float(hidden.grad.float().norm()),
        "grad_weight_norm": float(weight.grad.float().norm()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(nan_to_none(run_side(args))))
        return 0
    hf = run_child(__file__, child_payload(args, side="hf"), args.threads)
    ours = run_child(__file__, child_payload(args, side="ours"), args.threads)

    def ratio(key: str) -> float:
        return ours[key] / hf[key] if hf[key] > 0 else float("nan")  # NaN (also) when the reset is unsupported

    mem_ratio, steady_ratio, time_ratio = ratio("peak_mib"), ratio("peak_steady_mib"), ratio("median_s")
    loss_diff = abs(ours["loss"] - hf["loss"])

    tiny_note(args)
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

    write_json(
        args.json,
        {
            "config": {k: v for k, v in vars(args).items() if k not in ("child", "json")},
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
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
