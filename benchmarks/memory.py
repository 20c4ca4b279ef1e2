"""Benchmark: peak memory and step time of the LoRA-finetune step with float32, bf16 and NF4 frozen weights.

Six sides, each in its own process, on the ``train_step.py`` model and batch (LLaVA-1.5 layout at benchmark size,
frozen tower, fully trained projector, LoRA on the LLM's q/k/v/o/gate/up/down), by default in the recipes' setting
(bf16 autocast + activation checkpointing):

* ``ours-fp32``: ``MultimodalModule`` with its frozen weights in float32 (``storage_dtype: float32``; what every
  version before the frozen storage dtype did);
* ``ours-bf16``: frozen weights in bfloat16 (the default under ``bf16-mixed``), adapters and projector float32;
* ``ours-nf4``: QLoRA: the LLM's and the tower's linear layers NF4 (bitsandbytes ``Linear4bit``, compute bf16), the
  rest of the frozen weights bf16;
* ``hf-fp32`` / ``hf-bf16`` / ``hf-nf4``: transformers' ``LlavaForConditionalGeneration`` + peft LoRA in the same
  three settings: float32 weights; ``torch_dtype=bfloat16`` with the trainable parameters (LoRA, projector) put back
  in float32; and ``from_pretrained(quantization_config=BitsAndBytesConfig(nf4, compute bf16))`` of the same
  architecture saved once by the parent (projector and ``lm_head`` left unquantised, so the projector trains).

Peak memory: ``ru_maxrss`` during the steps minus the resident set before the model was built (every library already
loaded and run once at tiny size, the batch allocated); the high-water mark is reset after the build (``malloc_trim`` + ``/proc/self/clear_refs``), so the peak
holds the weights, the optimiser state, gradients and activations of the steps, not the transient of loading. Step
time: median of ``--repeats`` steps after the first, and, for the time ratios, ``--pairs`` interleaved passes of one
step per side of ``--pair-sides`` built together in one more process (median over passes of the per-pass ratio: the
steps of a pass see the same load). ``--rounds`` repeats every side's process in alternating order; medians over
rounds are reported.

Last, the weights of ``--meta-model`` (default ``llava-1.5-7b``) in each setting, predicted from a meta-device build
with LLaVA's LoRA placement (``lightning_mm.placement.predicted_bytes``: nothing is allocated).

Usage::

    python benchmarks/memory.py                  # full size, 6 sides x 2 rounds (about 10 minutes on 2 cores)
    python benchmarks/memory.py --sides ours-fp32,ours-bf16 --rounds 3
    python benchmarks/memory.py --tiny --json out.json   # seconds, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import time

import torch
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
from _llava import hf_llava_config, ours_overrides
from _memory import current_rss_mib, malloc_trim, maxrss_mib, reset_peak_rss
from _sides import LORA_TARGETS, TrainSide, build_hf, image_token_id, llava_lora_placements, make_batch
from peft import LoraConfig, inject_adapter_in_model
from train_step import TINY, add_step_args, check_step_args
from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration

from lightning_mm import MultimodalModule
from lightning_mm.placement import Placement, predicted_bytes, stored_bytes
from lightning_mm.zoo import build_network, get_spec

SIDES = ("ours-fp32", "ours-bf16", "ours-nf4", "hf-fp32", "hf-bf16", "hf-nf4")
BF16_MEMORY_TARGET = 0.55  # ours-bf16 / ours-fp32 peak
NF4_MEMORY_TARGET = 0.8  # ours-nf4 / hf-nf4 peak
NF4_BYTES_TARGET = 0.30  # NF4 / bf16 bytes of the frozen LLM (meta prediction)
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    add_step_args(parser)
    parser.set_defaults(dtype="bfloat16", activation_checkpointing=True)
    parser.add_argument("--no-activation-checkpointing", dest="activation_checkpointing", action="store_false")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {SIDES}")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per process (after the first)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per side (alternating order)")
    parser.add_argument(
        "--pairs", type=int, default=3, help="interleaved timing passes (one step per paired side each, one process)"
    )
    parser.add_argument(
        "--pair-sides", default="ours-fp32,ours-bf16,ours-nf4,hf-nf4", help="sides built in the timing process"
    )
    parser.add_argument("--meta-model", default="llava-1.5-7b", help="zoo entry whose weights are predicted ('' skips)")
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_args(args)
    apply_tiny(args, {**TINY, "repeats": 1, "rounds": 1, "pairs": 1})
    check_step_args(parser, args)
    unknown = sorted((set(args.sides.split(",")) | set(args.pair_sides.split(","))) - set(SIDES) - {""})
    if unknown:
        parser.error(f"--sides: unknown {unknown}; known: {SIDES}")
    return args


# ----------------------------------------------------------------------------------------------------------------------
# Sides
# ----------------------------------------------------------------------------------------------------------------------


def ours_placements(cfg: argparse.Namespace, setting: str) -> dict[str, Placement]:
    """LLaVA's LoRA finetune placement with the setting's frozen storage (fp32, bf16) or NF4 LLM and tower."""
    storage = "float32" if setting == "fp32" else "bfloat16"
    quantize = "nf4" if setting == "nf4" else None
    placements = llava_lora_placements(cfg)
    return {
        "vision": dataclasses.replace(placements["vision"], storage_dtype=storage, quantize=quantize),
        "projector": placements["projector"],
        "llm": dataclasses.replace(placements["llm"], storage_dtype=storage, quantize=quantize),
    }


def build_ours_side(cfg: argparse.Namespace, setting: str) -> TrainSide:
    """``MultimodalModule`` with the setting's placements, built as ``_sides.build_ours`` builds it."""
    torch.manual_seed(cfg.seed)
    module = MultimodalModule(
        model="tiny",
        model_overrides=ours_overrides(cfg),
        optimizer=lambda params: torch.optim.AdamW(params, lr=cfg.lr),
        activation_checkpointing=cfg.activation_checkpointing,
    )
    for component, placement in ours_placements(cfg, setting).items():
        module.set_placement(component, placement)
    module.configure_model()
    optimizer = module.optimizer_factory(module.param_groups())
    module.train()

    def forward_loss(batch: dict) -> torch.Tensor:
        hidden = module(batch)  # (B, T, H)
        loss_sum, n_items = module.compute_loss(hidden, batch["labels"])
        return loss_sum / n_items.clamp(min=1)

    net = module.network
    return TrainSide(f"ours-{setting}", module, optimizer, forward_loss, dict(net.named_children()), cfg.dtype)


def _hf_trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """LLaVA's LoRA finetune on transformers' model: projector and LoRA train, in float32 (master weights)."""
    params = []
    for name, p in model.named_parameters():
        trains = ".multi_modal_projector." in name or ".lora_" in name
        if p.is_floating_point():  # bitsandbytes' packed weights cannot require grad at all
            p.requires_grad_(trains)
        if trains:
            p.data = p.data.float()
            params.append(p)
    return params


def build_hf_side(cfg: argparse.Namespace, setting: str) -> TrainSide:
    """transformers' LLaVA + peft: float32, bf16 weights (float32 trainables), or NF4 loaded from ``cfg.hf_dir``."""
    if setting != "nf4":
        side = build_hf(cfg, cfg.image_token_id, name=f"hf-{setting}")
        if setting == "bf16":
            side.model.to(torch.bfloat16)  # parameters keep their identity: the optimiser still holds them
            _hf_trainable(side.model)
        return side
    torch.manual_seed(cfg.seed)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=["model.multi_modal_projector", "lm_head"],  # matched from the start of a name,
    )
    model = LlavaForConditionalGeneration.from_pretrained(
        cfg.hf_dir, quantization_config=quant, dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    targets = r".*language_model\..*\.(" + "|".join(LORA_TARGETS) + ")"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets)
    inject_adapter_in_model(lora, model)
    if cfg.activation_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    optimizer = torch.optim.AdamW(_hf_trainable(model), lr=cfg.lr)
    model.train()

    def forward_loss(batch: dict) -> torch.Tensor:
        keys = ("input_ids", "pixel_values", "attention_mask", "labels")
        return model(**{k: batch[k] for k in keys}).loss

    return TrainSide("hf-nf4", model, optimizer, forward_loss, {}, cfg.dtype)


def warm_up(cfg: argparse.Namespace) -> None:
    """Import and run everything a side uses (timm, peft, transformers' LLaVA, bitsandbytes) at tiny size, once.

    Libraries loaded lazily by the first build would otherwise count in the measured peak (about 90 MiB of code and
    one-off buffers, the same on every side).
    """
    tiny = argparse.Namespace(**{**vars(cfg), **TINY, "batch": 1})
    for side in (build_ours_side(tiny, "nf4"), build_hf(tiny, tiny.image_token_id)):
        side.step(make_batch(tiny, tiny.image_token_id, batch_size=1))
    gc.collect()


def run_side(cfg: argparse.Namespace) -> dict:
    """Child: build one side, then its first step and ``--repeats`` more; peak memory over the steps, step times."""
    torch.set_num_threads(cfg.threads)
    warm_up(cfg)
    batch = make_batch(cfg, cfg.image_token_id)
    malloc_trim()
    before_build = current_rss_mib()
    owner, setting = cfg.side.split("-")
    side = build_ours_side(cfg, setting) if owner == "ours" else build_hf_side(cfg, setting)
    weights = stored_bytes(side.model)
    llm = side.model.network.llm if owner == "ours" else side.model.model.language_model
    malloc_trim()
    after_build = current_rss_mib()
    reset = reset_peak_rss()
    steps = []
    for _ in range(1 + cfg.repeats):
        t0 = time.perf_counter()
        result = side.step(batch)
        steps.append({"loss": result["loss"], "wall_s": time.perf_counter() - t0})
    return {
        "side": cfg.side,
        "loss": steps[0]["loss"],
        "weights_mib": weights["total"] / 2**20,
        "llm_frozen_mib": stored_bytes(llm)["frozen"] / 2**20,
        "built_mib": after_build - before_build,
        "peak_mib": maxrss_mib() - before_build,
        "peak_reset": reset,
        "step_s": statistics.median(s["wall_s"] for s in steps[1:]) if cfg.repeats else steps[0]["wall_s"],
        "steps": steps,
    }


def run_paired(cfg: argparse.Namespace) -> dict:
    """Child: the paired sides in one process, ``--pairs`` passes of one step each in rotating order.

    On a shared machine the load changes faster than a process runs: steps taken side by side see the same load, so
    the ratio of their times (median over passes) is what the time verdicts read.
    """
    torch.set_num_threads(cfg.threads)
    batch = make_batch(cfg, cfg.image_token_id)
    sides = []
    for name in cfg.pair_sides.split(","):
        owner, setting = name.split("-")
        sides.append(build_ours_side(cfg, setting) if owner == "ours" else build_hf_side(cfg, setting))
        sides[-1].step(batch)  # the first step allocates the optimiser state
    passes = []
    for i in range(cfg.pairs):
        order = sides[i % len(sides) :] + sides[: i % len(sides)]
        timing = {}
        for side in order:
            t0 = time.perf_counter()
            side.step(batch)
            timing[side.name] = time.perf_counter() - t0
        passes.append(timing)
    return {"passes": passes}


# ----------------------------------------------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------------------------------------------


def save_hf_checkpoint(cfg: argparse.Namespace, folder: str) -> None:
    """The transformers side's architecture (no adapters), saved once, for its NF4 side to load quantised."""
    torch.manual_seed(cfg.seed)
    config = hf_llava_config(cfg, cfg.image_token_id)
    LlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa").save_pretrained(folder)


def predict_meta(name: str, cfg: argparse.Namespace) -> dict[str, dict]:
    """Predicted weight bytes of zoo entry ``name`` per setting, LLaVA's LoRA placement, from meta-device builds."""
    out = {}
    settings = {"fp32": ("fp32", False), "bf16": ("bf16", False), "nf4": ("nf4", False), "nf4+dq": ("nf4", True)}
    for label, (setting, double_quant) in settings.items():
        placements = ours_placements(cfg, setting)
        if double_quant:
            placements = {c: dataclasses.replace(p, double_quant=p.quantize is not None) for c, p in placements.items()}
        placements["llm"] = dataclasses.replace(placements["llm"], target_modules=None)  # LLaVA: every linear layer
        with torch.device("meta"):
            network = build_network(get_spec(name))
        out[label] = predicted_bytes(network, placements)
    return out


def report(cfg: argparse.Namespace, results: dict[str, dict], passes: list[dict], meta: dict[str, dict]) -> dict:
    """Print the table, the ratios and verdicts; return the JSON result."""
    tiny_note(cfg)
    print(
        f"setting: dtype={cfg.dtype} activation_checkpointing={cfg.activation_checkpointing} B={cfg.batch} "
        f"image={cfg.image_size}px ViT {cfg.vision_dim}x{cfg.vision_depth} LLM {cfg.hidden}x{cfg.layers} "
        f"V={cfg.vocab} LoRA r={cfg.lora_r} threads={cfg.threads} rounds={cfg.rounds} repeats={cfg.repeats} (CPU)"
    )
    print(f"{'side':<10} {'loss':>8} {'weights MiB':>12} {'LLM frozen MiB':>15} {'peak MiB':>9} {'step s':>7}")
    for r in results.values():
        print(
            f"{r['side']:<10} {r['loss']:>8.4f} {r['weights_mib']:>12.1f} {r['llm_frozen_mib']:>15.1f} "
            f"{r['peak_mib']:>9.1f} {r['step_s']:>7.3f}"
        )

    def ratio(a: str, b: str, key: str) -> float:
        if key == "step_s" and passes and a in passes[0] and b in passes[0]:
            return median_ratio((p[a], p[b]) for p in passes)  # interleaved steps: the same load on both
        if a not in results or b not in results or not results[b][key] > 0:
            return float("nan")
        return results[a][key] / results[b][key]

    out = {"config": {k: v for k, v in vars(cfg).items() if k not in ("json", "child")}, "sides": results}
    out["paired_passes"] = passes
    if passes:
        print(f"time ratios of {', '.join(passes[0])}: median over {len(passes)} interleaved passes (one process)")
        for p in passes:
            print("  pass: " + "  ".join(f"{k} {v:.2f} s" for k, v in p.items()))
    else:
        print("time ratios: per-side processes (different moments: noisy on a shared machine)")
    checks = [
        ("bf16 frozen / fp32 frozen (ours)", "ours-bf16", "ours-fp32", BF16_MEMORY_TARGET, 1.0),
        ("nf4 / hf nf4", "ours-nf4", "hf-nf4", NF4_MEMORY_TARGET, 1.0),
        ("bf16 / hf bf16", "ours-bf16", "hf-bf16", 1.0, 1.0),
        ("fp32 / hf fp32", "ours-fp32", "hf-fp32", 1.0, 1.0),
        ("nf4 / bf16 (ours)", "ours-nf4", "ours-bf16", 1.0, float("inf")),
    ]
    for label, a, b, mem_target, time_target in checks:
        mem, step = ratio(a, b, "peak_mib"), ratio(a, b, "step_s")
        out[f"{a}/{b}"] = {"memory_ratio": mem, "time_ratio": step}
        print(
            f"memory ratio {label}: {mem:.4f} (target <= {mem_target}) {verdict(mem, mem_target)}; "
            f"time ratio: {step:.4f} {verdict(step, time_target) if time_target != float('inf') else ''}"
        )
    if "ours-fp32" in results and "ours-bf16" in results:
        diff = abs(results["ours-bf16"]["loss"] - results["ours-fp32"]["loss"])
        rel = diff / abs(results["ours-fp32"]["loss"])
        out["loss_rel_diff_bf16_fp32"] = rel
        print(f"loss bf16 frozen vs fp32 frozen (first step): |diff| {diff:.2e}, relative {rel:.2e} (bf16 eps 7.8e-3)")
    if meta:
        print(f"predicted weights of {cfg.meta_model} (LLaVA LoRA r={cfg.lora_r} on every LLM linear), GiB:")
        print(f"  {'setting':<8} {'vision':>8} {'projector':>10} {'llm':>8} {'all':>8} {'llm frozen':>11}")
        for label, parts in meta.items():
            cells = " ".join(f"{parts[c]['total'] / GIB:>{w}.2f}" for c, w in (("vision", 8), ("projector", 10)))
            print(
                f"  {label:<8} {cells} {parts['llm']['total'] / GIB:>8.2f} {parts['all']['total'] / GIB:>8.2f} "
                f"{parts['llm']['frozen'] / GIB:>11.2f}"
            )
        for label in ("nf4", "nf4+dq"):
            r = meta[label]["llm"]["frozen"] / meta["bf16"]["llm"]["frozen"]
            out[f"meta_llm_frozen_ratio_{label}_bf16"] = r
            print(f"ratio frozen LLM bytes {label} / bf16 ({cfg.meta_model}): {r:.4f} {verdict(r, NF4_BYTES_TARGET)}")
        out["meta"] = meta
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.child is not None:
        print(json.dumps(nan_to_none(run_side(cfg) if cfg.role == "side" else run_paired(cfg))))
        return 0
    cfg.image_token_id = image_token_id()
    sides = [s for s in SIDES if s in cfg.sides.split(",")]
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as folder:
        cfg.hf_dir = folder
        if "hf-nf4" in sides or "hf-nf4" in cfg.pair_sides.split(","):
            save_hf_checkpoint(cfg, folder)
        for round_ in range(cfg.rounds):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                runs[side].append(run_child(__file__, child_payload(cfg, role="side", side=side), cfg.threads))
        paired = [s for s in cfg.pair_sides.split(",") if s]
        passes = []
        if cfg.pairs and paired:
            passes = run_child(__file__, child_payload(cfg, role="paired"), cfg.threads)["passes"]
    results = {}
    for side, rounds in runs.items():
        res = dict(rounds[0])
        for key in ("peak_mib", "step_s", "built_mib"):
            res[key] = statistics.median(r[key] for r in rounds)
            res[f"{key}_rounds"] = [r[key] for r in rounds]
        results[side] = res
    meta = predict_meta(cfg.meta_model, cfg) if cfg.meta_model else {}
    write_json(cfg.json, report(cfg, results, passes, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
