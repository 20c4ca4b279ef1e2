"""Benchmark: one LLaVA LoRA-finetune training step, transformers' ``LlavaForConditionalGeneration`` + peft vs. ours.

The two sides and the batch are built by ``_sides.py`` (one builder each: ``build_ours``, ``build_hf``); this script
is the harness that measures them. The batch is LLaVA-shaped: ``--batch`` samples, one ``--image-size`` image each
(576 image tokens at 336 px, patch 14) spliced after a short prompt, ``--text-tokens`` text tokens of which the last
``--answer-tokens`` (the answer) are supervised. ``--dtype bfloat16`` runs forward and loss under CPU bf16 autocast on
both sides; ``--activation-checkpointing`` recomputes the LLM decoder layers on both sides (with both: the setting of
``recipes/llava_v15/*_finetune_lora.yaml``).

Measurements (the same thread count everywhere):

* peak memory: each side in its own subprocess; growth of ``ru_maxrss`` over a baseline taken after the model, the
  optimiser and the batch are built (``malloc_trim`` and ``/proc/self/clear_refs`` first reset the high-water mark to
  the resident size). First step: the first full-size step, including the AdamW state and one-off library buffers;
  steady: the second step. ``--rounds`` repeats the subprocesses in alternating order; the median is reported.
* step time: on a shared machine the load changes faster than a subprocess runs, so the time ratio is measured on
  interleaved steps: one more subprocess builds every side and runs ``--pairs`` passes of one step per side, rotating
  the order; the ratio is the median over passes of (side's step / hf's step in the same pass). The median step
  times of the per-side subprocesses (``--repeats`` steps each) are printed as a cross-check.
* time split per stage (vision tower, projector + splice, LLM forward, loss, backward, optimiser), from forward hooks
  (CPU ops run synchronously), median over all timed steps.

``--profile`` adds a ``torch.profiler`` table (top ops by self CPU time) of one step of ours (``--profile-side`` for
the other or both). ``--ours-variants`` measures variants of ours (``_sides.OursOptions``) as extra sides;
``--compile`` adds ``ours[compile]`` (each block compiled in place): its first step, which compiles, is excluded from
the step times (it is the memory run's first step) and printed separately.

Usage::

    python benchmarks/train_step.py                       # full size (about 10 minutes on 2 shared cores)
    python benchmarks/train_step.py --dtype bfloat16 --activation-checkpointing   # the recipes' setting
    python benchmarks/train_step.py --profile --ours-variants peft-dropout
    python benchmarks/train_step.py --compile --pairs 3   # + ours with compiled blocks
    python benchmarks/train_step.py --tiny --json out.json   # seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from _harness import (
    TINY_MODEL,
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
from _llava import add_size_args, image_tokens
from _memory import current_rss_mib, peak_growth
from _sides import OursOptions, build_hf, build_ours, image_token_id, make_batch

TIME_TARGET = 1 / 1.5  # ours/hf step time (ours >= 1.5x faster)
MEMORY_TARGET = 1 / 3  # ours/hf peak memory growth (ours >= 3x lower)
STAGES = ("vision", "projector+splice", "llm_forward", "loss", "backward", "optimizer")
TINY = {**TINY_MODEL, "batch": 2, "text_tokens": 24, "answer_tokens": 8, "lora_r": 4, "lora_alpha": 8}
TINY_RUNS = {"repeats": 1, "rounds": 1, "pairs": 2}


def add_step_args(parser: argparse.ArgumentParser) -> None:
    """The options of the step itself (model and batch size, LoRA, dtype, checkpointing): shared with roofline.py."""
    add_size_args(parser, batch=4, text_tokens=128, text_help="text tokens per sample (besides the image)")
    parser.add_argument("--answer-tokens", type=int, default=96, help="supervised answer tokens per sample")
    parser.add_argument("--prompt-tokens", type=int, default=4, help="text tokens before the image")
    parser.add_argument("--lora-r", type=int, default=128)
    parser.add_argument("--lora-alpha", type=int, default=256)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--activation-checkpointing", action="store_true", help="recompute the LLM decoder layers in backward"
    )


def check_step_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.image_size % args.patch_size:
        parser.error("--image-size must be a multiple of --patch-size")
    if not 1 <= args.answer_tokens <= args.text_tokens - args.prompt_tokens - 1:
        parser.error("need 1 <= answer-tokens <= text-tokens - prompt-tokens - 1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    add_step_args(parser)
    parser.add_argument("--pairs", type=int, default=6, help="interleaved timing passes (one step per side each)")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps in each per-side subprocess")
    parser.add_argument("--rounds", type=int, default=1, help="per-side subprocess launches (alternating order)")
    parser.add_argument(
        "--ours-variants",
        default="",
        help="comma-separated variants of ours measured as extra sides, each a '+'-joined set of "
        f"{OursOptions.names()} (see _sides.OursOptions), e.g. 'peft-dropout,ac+fused-adamw'",
    )
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=None,
        help="glibc's MALLOC_MMAP_THRESHOLD_ (bytes) in the children: freed mid-sized tensors no longer stay resident "
        "in the heap, so ru_maxrss follows the live tensors (allocator-neutral memory)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also measure ours with compiled blocks (the variant 'compile')"
    )
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step")
    parser.add_argument("--profile-side", choices=["ours", "hf", "both"], default="ours")
    parser.add_argument("--profile-rows", type=int, default=25)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_args(args)
    apply_tiny(args, {**TINY, **TINY_RUNS})
    check_step_args(parser, args)
    if args.compile and "compile" not in variants_of(args):
        args.ours_variants = ",".join([*variants_of(args), "compile"])
    for variant in variants_of(args):
        try:
            options = OursOptions.parse(variant)
        except ValueError as err:
            parser.error(f"--ours-variants: {err}")
        if options.frozen_bf16 and args.dtype != "bfloat16":
            parser.error("--ours-variants: frozen-bf16 needs --dtype bfloat16")
    if args.repeats < 1 or args.rounds < 1 or args.pairs < 0:
        parser.error("need repeats >= 1, rounds >= 1, pairs >= 0")
    return args


def variants_of(args: argparse.Namespace) -> list[str]:
    return [v for v in args.ours_variants.split(",") if v]


def side_names(args: argparse.Namespace) -> list[str]:
    """hf, ours, then ``ours[<variant>]`` for each variant."""
    return ["hf", "ours"] + [f"ours[{v}]" for v in variants_of(args)]


# ----------------------------------------------------------------------------------------------------------------------
# Children: one side alone (memory, a few steps, the profile), or every side interleaved (time)
# ----------------------------------------------------------------------------------------------------------------------


class StageClock:
    """Forward hooks timing the vision tower, the projector and the LLM decoder (CPU ops run synchronously)."""

    def __init__(self, parts: dict) -> None:
        self.marks: dict[str, float] = {}
        self._ranges: dict[str, object] = {}
        for name, mod in parts.items():

            def pre(mod, inputs, name=name):
                self.marks[f"{name}_start"] = time.perf_counter()
                self._ranges[name] = torch.profiler.record_function(f"## {name} forward ##").__enter__()

            def post(mod, inputs, out, name=name):
                self.marks[f"{name}_end"] = time.perf_counter()
                rf = self._ranges.pop(name, None)
                if rf is not None:
                    rf.__exit__(None, None, None)

            mod.register_forward_pre_hook(pre)
            mod.register_forward_hook(post)


class Measured:
    """A side built in this process, with its batch and stage clock."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        if name == "hf":
            self.side = build_hf(args, args.image_token_id)
        else:
            variant = name.removeprefix("ours").strip("[]")
            self.side = build_ours(args, OursOptions.parse(variant), name=name)
        self.batch = make_batch(args, args.image_token_id)
        self.clock = StageClock(self.side.parts)
        with torch.no_grad(), self.side.autocast():  # thread pool and kernels warm, no gradient or optimiser state
            self.side.forward_loss(make_batch(args, args.image_token_id, batch_size=1))

    def step(self) -> dict:
        """One training step: loss, wall and CPU seconds, and the split per stage."""
        cpu0 = time.process_time()
        t = self.side.step(self.batch)
        cpu = time.process_time() - cpu0
        m = self.clock.marks
        vision = m["vision_end"] - m["vision_start"]
        split = {
            "vision": vision,
            "projector+splice": (m["llm_start"] - t["start"]) - vision,
            "llm_forward": m["llm_end"] - m["llm_start"],
            "loss": t["loss_end"] - m["llm_end"],  # ours: lm_head on supervised rows + CE + its gradients; hf: logits
            "backward": t["backward_end"] - t["loss_end"],
            "optimizer": t["end"] - t["backward_end"],
        }
        return {"loss": t["loss"], "wall_s": t["end"] - t["start"], "cpu_s": cpu, "split_s": split}

    def param_counts(self) -> dict:
        parts = {**self.side.parts, "all": self.side.model}
        return {
            name: {
                "total": sum(p.numel() for p in mod.parameters()),
                "trainable": sum(p.numel() for p in mod.parameters() if p.requires_grad),
            }
            for name, mod in parts.items()
        }


def run_side(args: argparse.Namespace) -> dict:
    """Child: peak memory and a few timed steps of one side, alone in this process."""
    torch.set_num_threads(args.threads)
    side = Measured(args, args.side)
    baseline_rss = current_rss_mib()
    first = peak_growth(side.step, trim=True)  # includes the AdamW state and one-off buffers
    steady = peak_growth(side.step, trim=True) if first["reset"] else {"peak_mib": float("nan"), "slack_mib": 0.0}
    steps = [side.step() for _ in range(args.repeats)]
    profile = None
    if args.profile and args.profile_side in (args.side, "both"):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            side.step()
        profile = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)
    return {
        "side": args.side,
        "loss": first["result"]["loss"],
        "first_step_s": first["result"]["wall_s"],  # a compiled side: compilation included
        "baseline_rss_mib": baseline_rss,
        "peak_mib": first["peak_mib"],
        "peak_steady_mib": steady["peak_mib"],
        "baseline_slack_mib": max(first["slack_mib"], steady["slack_mib"]),
        "peak_reset": first["reset"],
        "steps": steps,
        "params": side.param_counts(),
        "profile": profile,
    }


def run_paired(args: argparse.Namespace) -> dict:
    """Child: every side in this process, ``--pairs`` passes of one step per side in rotating order."""
    torch.set_num_threads(args.threads)
    sides = [Measured(args, name) for name in side_names(args)]
    for side in sides:
        side.step()  # the first step allocates the AdamW state
    passes = []
    for i in range(args.pairs):
        order = sides[i % len(sides) :] + sides[: i % len(sides)]
        passes.append({side.side.name: side.step() for side in order})
    return {"passes": passes}


# ----------------------------------------------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------------------------------------------


def summarise(name: str, isolated: list[dict], passes: list[dict]) -> dict:
    """One side's results: memory (median over rounds), step times, split per stage."""
    res = dict(isolated[0])
    for key in ("peak_mib", "peak_steady_mib", "baseline_rss_mib"):
        values = [r[key] for r in isolated if r[key] == r[key]]  # NaN-free
        res[key] = statistics.median(values) if values else float("nan")
        res[f"{key}_rounds"] = [r[key] for r in isolated]
    res["baseline_slack_mib"] = max(r["baseline_slack_mib"] for r in isolated)
    res["first_step_s_rounds"] = [r["first_step_s"] for r in isolated]
    res["isolated_steps"] = [s for r in isolated for s in r["steps"]]
    del res["steps"]
    res["paired_steps"] = [p[name] for p in passes]
    res["isolated_median_s"] = statistics.median(s["wall_s"] for s in res["isolated_steps"])
    timed = res["paired_steps"] or res["isolated_steps"]
    res["median_s"] = statistics.median(s["wall_s"] for s in timed)
    res["min_s"] = min(s["wall_s"] for s in timed)
    res["median_cpu_s"] = statistics.median(s["cpu_s"] for s in timed)
    steps = res["paired_steps"] + res["isolated_steps"]
    res["split_median_s"] = {k: statistics.median(s["split_s"][k] for s in steps) for k in STAGES}
    res["profile"] = next((r["profile"] for r in isolated if isinstance(r.get("profile"), str)), None)
    return res


def measure(args: argparse.Namespace) -> tuple[dict[str, dict], list[dict]]:
    """Per-side children (``--rounds``, alternating order) and the paired child; the summaries and the passes."""
    env = {} if args.mmap_threshold is None else {"MALLOC_MMAP_THRESHOLD_": str(args.mmap_threshold)}
    names = side_names(args)
    isolated: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        # alternate the order, so that a change of load on the shared machine does not land on one side only
        for name in names if round_ % 2 == 0 else names[::-1]:
            profile = args.profile and round_ == 0 and not name.startswith("ours[")  # profile once
            payload = child_payload(args, role="side", side=name, profile=profile)
            isolated[name].append(run_child(__file__, payload, args.threads, **env))
    passes = (
        run_child(__file__, child_payload(args, role="paired"), args.threads, **env)["passes"] if args.pairs else []
    )
    return {name: summarise(name, runs, passes) for name, runs in isolated.items()}, passes


def report(args: argparse.Namespace, results: dict[str, dict], passes: list[dict]) -> dict:
    """Print the tables and verdicts; return the JSON result."""
    hf, ours = results["hf"], results["ours"]

    def ratio(res: dict, ref: dict, key: str) -> float:
        return res[key] / ref[key] if ref[key] > 0 else float("nan")

    def time_ratio(res: dict, ref: dict, key: str = "wall_s") -> float:
        if passes:
            return median_ratio((p[res["side"]][key], p[ref["side"]][key]) for p in passes)
        return ratio(res, ref, "median_s" if key == "wall_s" else "median_cpu_s")

    tiny_note(args)
    seq = image_tokens(args) + args.text_tokens
    print(
        f"shape: B={args.batch} T={seq} (image {image_tokens(args)} + text {args.text_tokens}, supervised "
        f"{args.answer_tokens}/sample = {args.answer_tokens / seq:.1%}) image={args.image_size}px/{args.patch_size} "
        f"ViT {args.vision_dim}x{args.vision_depth} LLM {args.hidden}x{args.layers} V={args.vocab} "
        f"LoRA r={args.lora_r} dtype={args.dtype} activation_checkpointing={args.activation_checkpointing} "
        f"threads={args.threads} pairs={args.pairs} rounds={args.rounds} repeats={args.repeats} "
        f"malloc={'glibc default' if args.mmap_threshold is None else f'MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}'} "
        "(CPU)"
    )
    print("params (trainable / total):")
    for comp in ("vision", "projector", "llm", "all"):
        cells = (
            f"{r['side']} {r['params'][comp]['trainable']:>10,} / {r['params'][comp]['total']:>11,}" for r in (hf, ours)
        )
        print(f"  {comp:<10} " + "  ".join(cells))
    width = max(len(n) for n in results) + 1
    print(
        f"{'side':<{width}} {'loss':>8} {'baseline MiB':>13} {'peak MiB (1st)':>15} {'peak MiB (steady)':>18} "
        f"{'step s':>7} {'min s':>7} {'cpu s':>7} {'time/hf':>8} {'cpu/hf':>7} {'mem/hf':>7}"
    )
    for res in results.values():
        print(
            f"{res['side']:<{width}} {res['loss']:>8.4f} {res['baseline_rss_mib']:>13.0f} {res['peak_mib']:>15.1f} "
            f"{res['peak_steady_mib']:>18.1f} {res['median_s']:>7.3f} {res['min_s']:>7.3f} "
            f"{res['median_cpu_s']:>7.3f} {time_ratio(res, hf):>8.3f} {time_ratio(res, hf, 'cpu_s'):>7.3f} "
            f"{ratio(res, hf, 'peak_mib'):>7.3f}"
        )
    print("time split, median s (" + " / ".join(STAGES) + "):")
    for res in results.values():
        split = res["split_median_s"]
        total = sum(split.values())
        print(f"  {res['side']:<{width}} " + "  ".join(f"{k} {split[k]:.3f} ({split[k] / total:.0%})" for k in STAGES))
    for res in results.values():
        if res["baseline_slack_mib"] > 1.0:
            print(f"warning: {res['side']} peak may be underestimated by up to {res['baseline_slack_mib']:.1f} MiB")
    variants = {}
    for name, res in results.items():
        if name.startswith("ours["):
            v = variants[name] = {
                "time_vs_ours": time_ratio(res, ours),
                "cpu_time_vs_ours": time_ratio(res, ours, "cpu_s"),
                "memory_vs_ours": ratio(res, ours, "peak_mib"),
                "memory_steady_vs_ours": ratio(res, ours, "peak_steady_mib"),
                "time_vs_hf": time_ratio(res, hf),
                "memory_vs_hf": ratio(res, hf, "peak_mib"),
            }
            if OursOptions.parse(name.removeprefix("ours").strip("[]")).compile:
                v["first_step_s"] = statistics.median(r for r in res["first_step_s_rounds"])
                print(
                    f"variant {name}: first step (compilation included) {v['first_step_s']:.1f} s, not in its step "
                    f"times (later steps {res['median_s']:.3f} s)"
                )
            print(
                f"variant {name}: vs ours: time {v['time_vs_ours']:.4f} (cpu {v['cpu_time_vs_ours']:.4f}), memory "
                f"{v['memory_vs_ours']:.4f} (steady {v['memory_steady_vs_ours']:.4f}); vs hf: time "
                f"{v['time_vs_hf']:.4f}, memory {v['memory_vs_hf']:.4f}"
            )
    mem, steady = ratio(ours, hf, "peak_mib"), ratio(ours, hf, "peak_steady_mib")
    step, cpu, isolated = time_ratio(ours, hf), time_ratio(ours, hf, "cpu_s"), ratio(ours, hf, "isolated_median_s")
    how = f"median of {len(passes)} interleaved passes" if passes else "per-side subprocesses"
    print(
        f"memory ratio ours/hf: {mem:.4f} (hf/ours {1 / mem:.2f}x; target <= {MEMORY_TARGET:.3f}) {verdict(mem, MEMORY_TARGET)}"
    )
    print(f"  steady-state step:  {steady:.4f} (hf/ours {1 / steady:.2f}x) {verdict(steady, MEMORY_TARGET)}")
    print(
        f"time ratio ours/hf:   {step:.4f} (hf/ours {1 / step:.2f}x; target <= {TIME_TARGET:.3f}; {how}) "
        f"{verdict(step, TIME_TARGET)}"
    )
    print(f"  CPU time (all threads): {cpu:.4f}; per-side subprocesses (cross-check): {isolated:.4f}")
    for res in results.values():
        if res["profile"]:
            print(f"\nprofile of one {res['side']} step (torch.profiler, CPU, top ops by self time):\n{res['profile']}")
    return {
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "child")},
        "hf": hf,
        "ours": ours,
        "variants": {name: {**results[name], **v} for name, v in variants.items()},
        "paired_passes": passes,
        "memory_ratio": mem,
        "memory_ratio_steady": steady,
        "time_ratio": step,
        "time_ratio_method": how,
        "cpu_time_ratio": cpu,
        "isolated_time_ratio": isolated,
        "memory_target": MEMORY_TARGET,
        "time_target": TIME_TARGET,
        "memory_pass": mem <= MEMORY_TARGET,
        "memory_steady_pass": steady <= MEMORY_TARGET,
        "time_pass": step <= TIME_TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(nan_to_none(run_side(args) if args.role == "side" else run_paired(args))))
        return 0
    args.image_token_id = image_token_id()
    results, passes = measure(args)
    write_json(args.json, report(args, results, passes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
