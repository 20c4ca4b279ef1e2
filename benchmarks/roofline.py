"""Benchmark: how much of this machine's matmul throughput the training step uses, and where the rest goes.

In one run, for each setting (``--settings``: ``float32``, and ``bf16+ckpt`` = bf16 autocast + activation
checkpointing, the recipes' setting), on our LoRA-finetune step of ``train_step.py`` (same model, batch and placement,
built by ``_sides.build_ours``):

1. FLOPs of one step, counted by ``torch.utils.flop_counter.FlopCounterMode``: every matrix product (``mm``, ``addmm``,
   ``bmm``, convolutions) and attention (the CPU flash-attention kernels, forward and backward, registered here with
   torch's own SDPA formulas: 4·B·h·T²·d forward, 10·B·h·T²·d backward; the causal mask is not discounted), of
   forward, loss and backward, so the forward recomputed under activation checkpointing is counted too (the optimiser
   has no matrix products). A matrix product of (M, K) by (K, N) counts 2·M·K·N.
2. This machine's matmul throughput at the GEMM shapes of that step: every distinct ``(M, K, N)`` the step runs
   (recorded at the same time), as ``torch.mm`` of contiguous operands in the step's compute dtype (float32, or
   bfloat16 under autocast), median of ``--matmul-repeats`` timings. ``peak`` is the fastest shape; ``mix`` is the
   step's GEMM FLOPs over the time those GEMMs take at the measured rates (what a step made of nothing but its GEMMs,
   each at its isolated speed, would reach).
3. The step's achieved FLOP/s = counted FLOPs / median step time (``--steps`` steps after a warm-up), and the fraction
   achieved / peak (and / mix). The same fraction from CPU seconds of all threads (step and GEMMs alike) is printed as
   a cross-check: on a machine shared with other jobs the wall times of the two measurements see different loads.
4. A ``torch.profiler`` profile of one step: self CPU time grouped into matmul, attention, dropout masks (random
   numbers), casts and copies, and the rest (inductor's fused kernels of a compiled step land there); the top ops
   by self time.

``--compile`` measures each setting a second time (``<setting>+compile``) with every vision block and LLM decoder
layer compiled in place (``_sides.OursOptions.compile``, as ``MultimodalModule(compile=True)``): the same FLOPs and
GEMM shapes (counted on the eager step: compiled kernels are invisible to ``FlopCounterMode``) over its own step
time; its first step, which compiles, is timed apart and excluded.

Usage::

    python benchmarks/roofline.py                  # both settings at train_step.py's size (a few minutes)
    python benchmarks/roofline.py --settings bf16+ckpt --steps 5
    python benchmarks/roofline.py --compile --steps 2   # each setting eager and compiled
    python benchmarks/roofline.py --tiny --json out.json   # seconds, for CI
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys

import torch
from _harness import apply_tiny, benchmark_parser, timed, tiny_note, write_json
from _llava import image_tokens
from _sides import OursOptions, build_ours, image_token_id, make_batch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from train_step import TINY, add_step_args, check_step_args

aten = torch.ops.aten
SETTINGS = {"float32": ("float32", False), "bf16+ckpt": ("bfloat16", True)}  # name -> (dtype, checkpointing)
GEMMS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
# self-time groups of the profile, by op name (first match wins; everything else is "other")
GROUPS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution")),
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("dropout masks", ("aten::bernoulli", "aten::rand", "aten::uniform_", "aten::random_")),
    ("casts + copies", ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous")),
)


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's FlopCounterMode knows the CUDA attention kernels, not the CPU flash-attention ones: same formulas
CPU_ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


class GemmShapes(TorchDispatchMode):
    """Records ``(M, K, N, dtype)`` of every matrix product that runs (batched ones as ``batch`` products)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in GEMMS:
            a, b = (args[1], args[2]) if func in (aten.addmm.default, aten.baddbmm.default) else (args[0], args[1])
            batch = a.shape[0] if a.dim() == 3 else 1
            self.counts[(a.shape[-2], a.shape[-1], b.shape[-1], a.dtype)] += batch
        return func(*args, **(kwargs or {}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    add_step_args(parser)
    parser.add_argument("--settings", default="float32,bf16+ckpt", help=f"comma-separated, of {sorted(SETTINGS)}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up step)")
    parser.add_argument("--matmul-repeats", type=int, default=5, help="timings of each GEMM shape")
    parser.add_argument("--profile-rows", type=int, default=15)
    parser.add_argument(
        "--compile", action="store_true", help="also measure each setting with compiled blocks ('<setting>+compile')"
    )
    args = apply_tiny(parser.parse_args(argv), {**TINY, "steps": 1, "matmul_repeats": 2})
    check_step_args(parser, args)
    args.settings = [s for s in args.settings.split(",") if s]
    if not args.settings or set(args.settings) - set(SETTINGS):
        parser.error(f"--settings: choose from {sorted(SETTINGS)}")
    return args


def count_step(side, batch: dict) -> tuple[dict, collections.Counter]:
    """FLOPs of one step by kind (``matmul``, ``attention``, total) and the GEMM shapes it ran."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    shapes = GemmShapes()
    with counter, shapes:
        side.step(batch)
    by_op = counter.get_flop_counts()["Global"]
    attention = sum(v for op, v in by_op.items() if "attention" in str(op))
    return {"total": counter.get_total_flops(), "attention": attention}, shapes.counts


def time_gemm(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``torch.mm`` of contiguous (M, K) and (K, N) operands."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, b)  # warm: kernel choice, packing buffers
    walls, cpus = [], []
    for _ in range(repeats):
        _, wall, cpu = timed(lambda: torch.mm(a, b))
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def matmul_rates(shapes: collections.Counter, repeats: int) -> dict:
    """Measured FLOP/s per GEMM shape; ``peak`` (fastest shape) and ``mix`` (the step's GEMMs at those rates).

    The same from CPU seconds (all threads) under the ``cpu_`` keys: less sensitive to other jobs on the machine.
    """
    rows, flops, wall_s, cpu_s = [], 0.0, 0.0, 0.0
    for (m, k, n, dtype), count in sorted(shapes.items(), key=lambda kv: -kv[0][0] * kv[0][1] * kv[0][2] * kv[1]):
        wall, cpu = time_gemm(m, k, n, dtype, repeats)
        f = 2.0 * m * k * n
        row = {"m": m, "k": k, "n": n, "dtype": str(dtype).removeprefix("torch."), "count": count, "flops": f}
        rows.append({**row, "flop_per_s": f / wall, "flop_per_cpu_s": f / cpu})
        flops, wall_s, cpu_s = flops + f * count, wall_s + wall * count, cpu_s + cpu * count
    return {
        "shapes": rows,
        "gemm_flops": flops,
        "peak": max(r["flop_per_s"] for r in rows),
        "mix": flops / wall_s,
        "cpu_peak": max(r["flop_per_cpu_s"] for r in rows),
        "cpu_mix": flops / cpu_s,
    }


def profile_step(side, batch: dict, rows: int) -> dict:
    """Self CPU time of one step grouped (see ``GROUPS``), and the top ops."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        side.step(batch)
    events = [e for e in prof.key_averages() if not e.key.startswith("## ")]
    total = sum(e.self_cpu_time_total for e in events)
    groups = dict.fromkeys([g for g, _ in GROUPS] + ["other"], 0.0)
    for e in events:
        group = next((g for g, names in GROUPS if any(name in e.key for name in names)), "other")
        groups[group] += e.self_cpu_time_total
    share = {g: t / total for g, t in groups.items()}
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]
    table = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in top]
    return {"self_cpu_s": total / 1e6, "share": share, "top": table}


def advice(res: dict) -> list[str]:
    """What the profile calls for, in the order of the time it would win."""
    share, notes = res["profile"]["share"], []
    gemm_time = share["matmul"]
    if gemm_time > 0:
        notes.append(
            f"matmul kernels: {gemm_time:.0%} of the step's self time; at the measured rates the step's GEMMs "
            f"would take {res['gemm_s_at_mix'] / res['step_s']:.0%} of the step"
        )
    if share["dropout masks"] > 0.05:
        notes.append(f"LoRA-dropout masks (CPU random numbers): {share['dropout masks']:.0%}")
    if share["casts + copies"] > 0.05:
        notes.append(
            f"casts and copies (autocast re-casting frozen float32 weights, layout copies): {share['casts + copies']:.0%}"
        )
    if share["other"] > 0.1:
        notes.append(f"elementwise and small kernels (norms, activations, masks, optimiser): {share['other']:.0%}")
    return notes


def run_setting(args: argparse.Namespace, name: str, image_token: int, eager: dict | None = None) -> dict:
    """One setting's measurements; with ``eager`` (that setting's eager result) the step is compiled and reuses its
    FLOPs and matmul rates."""
    dtype, checkpointing = SETTINGS[name]
    cfg = argparse.Namespace(**{**vars(args), "dtype": dtype, "activation_checkpointing": checkpointing})
    side = build_ours(cfg, OursOptions(compile=eager is not None), name=name)
    batch = make_batch(cfg, image_token)
    _, first_s, _ = timed(lambda: side.step(batch))  # warm-up; allocates the AdamW state (and compiles)
    if eager is None:
        flops, shapes = count_step(side, batch)
        rates = None
    else:
        flops, rates = eager["flops"], eager["matmul"]
    steps = []
    for _ in range(args.steps):
        steps.append(timed(lambda: side.step(batch))[1:])  # (wall, CPU) seconds
    step_s, step_cpu_s = statistics.median(w for w, _ in steps), statistics.median(c for _, c in steps)
    rates = rates or matmul_rates(shapes, args.matmul_repeats)
    res = {"dtype": dtype, "activation_checkpointing": checkpointing, "compiled": eager is not None}
    res.update(flops=flops, matmul=rates, first_step_s=first_s)
    res.update(step_s=step_s, step_cpu_s=step_cpu_s, steps_s=steps, achieved=flops["total"] / step_s)
    res["fraction_of_peak"] = res["achieved"] / rates["peak"]
    res["fraction_of_mix"] = res["achieved"] / rates["mix"]
    res["cpu_fraction_of_peak"] = flops["total"] / step_cpu_s / rates["cpu_peak"]
    res["gemm_s_at_mix"] = rates["gemm_flops"] / rates["mix"]
    res["profile"] = profile_step(side, batch, args.profile_rows)
    res["advice"] = advice(res)
    return res


def report(args: argparse.Namespace, results: dict) -> None:
    tiny_note(args)
    seq = image_tokens(args) + args.text_tokens
    print(
        f"shape: B={args.batch} T={seq} ViT {args.vision_dim}x{args.vision_depth} LLM {args.hidden}x{args.layers} "
        f"V={args.vocab} LoRA r={args.lora_r} threads={torch.get_num_threads()} steps={args.steps} (CPU)"
    )
    for name, res in results.items():
        m, f = res["matmul"], res["flops"]
        print(
            f"\n[{name}] step {res['step_s']:.3f} s (median of {len(res['steps_s'])}); FLOPs per step (FlopCounterMode):"
        )
        if res["compiled"]:
            print(
                f"  first step {res['first_step_s']:.1f} s (compilation included; not in the step time), FLOPs and "
                "GEMM rates of the eager step"
            )
        print(
            f"  total {f['total'] / 1e9:.1f} GFLOP (attention {f['attention'] / 1e9:.1f}; GEMMs recorded {m['gemm_flops'] / 1e9:.1f})"
        )
        print(f"  matmul throughput at the step's GEMM shapes ({m['shapes'][0]['dtype']}, {len(m['shapes'])} shapes):")
        for row in m["shapes"][:8]:
            print(
                f"    {row['m']:>6} x {row['k']:>5} x {row['n']:>6}  x{row['count']:<4} {row['flop_per_s'] / 1e9:8.1f} GFLOP/s"
            )
        print(
            f"  peak {m['peak'] / 1e9:.1f} GFLOP/s, step mix {m['mix'] / 1e9:.1f} GFLOP/s (per CPU second: peak "
            f"{m['cpu_peak'] / 1e9:.1f}, mix {m['cpu_mix'] / 1e9:.1f})"
        )
        print(f"  achieved {res['achieved'] / 1e9:.1f} GFLOP/s")
        print(
            f"fraction of peak ({name}): {res['fraction_of_peak']:.3f} (of the GEMM mix: {res['fraction_of_mix']:.3f})"
        )
        share = res["profile"]["share"]
        print("  self CPU time: " + ", ".join(f"{g} {s:.0%}" for g, s in share.items()))
        print("  top ops by self CPU time:")
        for row in res["profile"]["top"]:
            print(f"    {row['share']:6.1%}  {row['calls']:>5}  {row['op'][:70]}")
        print("  where the rest goes:")
        for note in res["advice"]:
            print(f"    - {note}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    image_token = image_token_id()
    results = {}
    for name in args.settings:
        results[name] = run_setting(args, name, image_token)
        if args.compile:
            results[f"{name}+compile"] = run_setting(args, name, image_token, eager=results[name])
    report(args, results)
    if args.compile:
        print("\nfraction of peak, eager -> compiled:")
        for name in args.settings:
            eager, compiled = results[name], results[f"{name}+compile"]
            print(
                f"  {name}: {eager['fraction_of_peak']:.3f} -> {compiled['fraction_of_peak']:.3f} (step "
                f"{eager['step_s']:.3f} s -> {compiled['step_s']:.3f} s; compiling took about "
                f"{compiled['first_step_s'] - compiled['step_s']:.1f} s)"
            )
    write_json(args.json, {"config": {k: v for k, v in vars(args).items() if k not in ("json", "child")}, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
