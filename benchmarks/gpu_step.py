"""GPU check: tokens/s, MFU and peak memory of one training step of a ~1B-class VLM with random weights.

The default model is the zoo's ``siglip-so400m-qwen2-0.5b`` (SigLIP So400m/14 at 384 px, 729 image tokens, mlp2x_gelu,
Qwen2-0.5B: about 0.9B parameters), built from its configs on the GPU (nothing is downloaded), and trained the way
LLaVA's stage 2 does: frozen tower, trained projector, fully trained LLM (``--llm lora`` or ``frozen`` for the other
placements). A step is the module's own path (``forward`` -> ``compute_loss`` -> backward -> fused AdamW), in
bf16 autocast with float32 weights (``--precision bf16-mixed``, as the recipes) or bf16 weights (``bf16-true``).

``--settings`` measures several settings one after another in the same process (``all``: every one), each built
afresh, with a summary table at the end:

* ``plain``: the placements as they are (frozen weights float32 under ``bf16-mixed``, cast by autocast at each use);
* ``bf16-frozen``: frozen weights stored in bfloat16 (``Placement(storage_dtype="bfloat16")``, what a Trainer does
  under ``bf16-mixed``);
* ``nf4``: the LLM's frozen linear layers quantised to NF4 by bitsandbytes (``Placement(quantize="nf4")``, QLoRA;
  needs ``--llm lora`` or ``frozen``);
* ``compiled``: each vision block and LLM decoder layer compiled in place (``MultimodalModule(compile=True)``); the
  first warm-up step, which compiles, is printed apart.

Printed for each (the median over ``--steps`` timed steps after ``--warmup`` steps):

* ``tokens/s``: every sequence position (text and image tokens) of the batch, per second;
* ``MFU``: model FLOPs per step / step time / the GPU's bf16 dense peak (spec sheet, or ``--peak-tflops``);
* ``utilisation ratio model/measured matmul peak``: the same against a large bf16 matmul timed on the device;
* ``peak memory``: ``torch.cuda.max_memory_allocated`` over the timed steps (optimiser state included).

Model FLOPs per step (activation-checkpointing recomputation is not counted; a linear layer of N weights applied to
n rows costs 2·N·n forward, 2·N·n for its input gradient when anything before it trains, 2·N·n for its weight
gradient when it trains):

* vision tower, frozen, under ``no_grad``: 2·(N_blocks·P + N_patch·P_patches)·I + 4·L_v·P²·d_v·I (the blocks up to
  the feature layer, and the patch embedding);
* projector, trained: (6·N_proj − 2·N_first)·P'·I (its first layer's input needs no gradient: the tower is frozen);
* LLM decoder layers: (4·N_dec + 2·N_dec,trained)·B·T + 3·4·L·d·T²·B (attention scores and mix, forward and
  backward; the causal mask is not discounted);
* ``lm_head`` on the S supervised rows only: (4 + 2·trained)·V·d·S.

With P tokens per image into the tower (patches + prefix), P' out of the projector, I images, B samples of T
positions, L layers of width d, V vocabulary rows.

Usage::

    python benchmarks/gpu_step.py                          # ~1B model, batch 8, on the GPU
    python benchmarks/gpu_step.py --llm lora --activation-checkpointing --batch 16
    python benchmarks/gpu_step.py --llm lora --settings all   # plain, bf16-frozen, nf4, compiled: one command
    python benchmarks/gpu_step.py --tiny --json out.json   # the tiny model, seconds, CPU if no GPU (CI)

Without a GPU (and without ``--tiny`` / ``--device cpu``) it exits with a message saying so.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from typing import Any

import torch

from lightning_mm import MultimodalModule
from lightning_mm.distributed import decoder_layers, vision_blocks
from lightning_mm.placement import Placement

SETTINGS = ("plain", "bf16-frozen", "nf4", "compiled")
# bf16 dense tensor-core peaks (no sparsity), FLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 756e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="siglip-so400m-qwen2-0.5b", help="zoo name (lightning-mm zoo)")
    parser.add_argument("--llm", choices=["full", "lora", "frozen"], default="full", help="LLM placement")
    parser.add_argument("--lora-r", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=384, help="text tokens per sample besides the image")
    parser.add_argument("--answer-tokens", type=int, default=128, help="supervised tokens per sample (the last ones)")
    parser.add_argument("--precision", choices=["bf16-mixed", "bf16-true"], default="bf16-mixed")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument(
        "--settings", default="plain", help=f"comma-separated, of {', '.join(SETTINGS)}; or 'all' (see the docstring)"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, AdamW state)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak per device (spec sheet)")
    parser.add_argument("--device", default=None, help="cuda (default) or cpu (a dry run of the script)")
    parser.add_argument("--tiny", action="store_true", help="tiny model and batch, on the GPU if any, else the CPU")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.batch, args.text_tokens, args.answer_tokens = "tiny", 2, 24, 8
        args.lora_r, args.steps, args.warmup = 4, 3, 1
        args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.device = args.device or "cuda"
    args.settings = list(SETTINGS) if args.settings == "all" else [x for x in args.settings.split(",") if x]
    unknown = sorted(set(args.settings) - set(SETTINGS))
    if unknown or not args.settings:
        parser.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)} or 'all'")
    if "nf4" in args.settings and args.llm == "full":
        parser.error("--settings nf4 quantises the frozen LLM weights: it needs --llm lora or --llm frozen")
    return args


def build(args: argparse.Namespace, device: torch.device, setting: str = "plain"):
    """The module (network built on ``device``) in ``setting``, its optimiser, and a random LLaVA-shaped batch."""

    module = MultimodalModule(
        model=args.model, activation_checkpointing=args.activation_checkpointing, compile=setting == "compiled"
    )
    storage = {"storage_dtype": "bfloat16"} if setting == "bf16-frozen" else {}
    quantize = {"quantize": "nf4", "storage_dtype": "bfloat16"} if setting == "nf4" else {}
    module.set_placement("vision", Placement("frozen", **storage))
    module.set_placement("projector", Placement("full"))
    module.set_placement("llm", Placement(args.llm, r=args.lora_r, alpha=2.0 * args.lora_r, **storage, **quantize))
    with torch.device(device):
        module.configure_model()
    if args.precision == "bf16-true":
        module.to(torch.bfloat16)
    module.train()
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(module.param_groups(), lr=1e-5, weight_decay=0.0, **fused)

    n_img = module.num_image_tokens
    size = module.image_data_config["input_size"]  # (3, H, W)
    seq = args.text_tokens + n_img
    vocab = module.network.llm.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (args.batch, seq), generator=gen)
    input_ids[input_ids == module.image_token_id] = 0
    input_ids[:, 4 : 4 + n_img] = module.image_token_id  # 4 prompt tokens, then the image
    labels = torch.full_like(input_ids, -100)
    labels[:, -args.answer_tokens :] = input_ids[:, -args.answer_tokens :]
    batch = {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
        "pixel_values": torch.randn(args.batch, *size, generator=gen).to(device),
    }
    return module, optimizer, batch


def _linear_params(module: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable) weights of the matmul layers inside ``module`` (embeddings and norms excluded)."""
    total = trained = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d):
            n = m.weight.numel()
            total += n
            trained += n if m.weight.requires_grad else 0
    return total, trained


def model_flops(module: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Model FLOPs of one step, per part (see the module docstring for the formulas)."""

    net = module.network
    tower = net.vision
    n_images = batch["pixel_values"].shape[0]
    blocks = vision_blocks(tower)[: tower.block_index + 1]
    patches = int(tower.model.patch_embed.num_patches)
    p_in = patches + tower.num_prefix_tokens
    d_v = tower.hidden_size
    n_blocks = sum(_linear_params(b)[0] for b in blocks)
    n_patch_embed = _linear_params(tower.model.patch_embed)[0]
    vision = 2 * (n_blocks * p_in + n_patch_embed * patches) * n_images + 4 * len(blocks) * p_in**2 * d_v * n_images

    n_proj, _ = _linear_params(net.projector)
    first = next(m for m in net.projector.modules() if isinstance(m, torch.nn.Linear)).weight.numel()
    projector = (4 * n_proj + 2 * (n_proj - first)) * module.num_image_tokens * n_images  # no input grad for the first

    b, t = batch["input_ids"].shape
    layers = decoder_layers(net.llm)
    n_dec, n_dec_trained = (sum(x) for x in zip(*(_linear_params(layer) for layer in layers), strict=True))
    d = net.llm.config.get_text_config().hidden_size
    decoder = (4 * n_dec + 2 * n_dec_trained) * b * t + 3 * 4 * len(layers) * d * t**2 * b

    head = net.lm_head
    supervised = int((batch["labels"][:, 1:] != -100).sum())
    lm_head = (4 + 2 * int(head.weight.requires_grad)) * head.weight.numel() * supervised
    return {"vision": vision, "projector": projector, "llm": decoder, "lm_head": lm_head}


def step(module: Any, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], autocast: bool) -> float:
    with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=autocast):
        hidden = module(batch)  # (B, T, H)
        loss_sum, n_items = module.compute_loss(hidden, batch["labels"])
    (loss_sum / n_items).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss_sum.detach()) / max(int(n_items), 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, size: int, repeats: int = 10) -> float:
    """FLOP/s of a square bf16 matmul on ``device`` (the best of ``repeats``)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    bm = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        a @ bm
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def spec_peak(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "unknown (CPU)"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return peak, name
    return None, f"unknown ({name}): pass --peak-tflops"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "gpu_step.py: no CUDA GPU is available (torch.cuda.is_available() is False). Run it on a GPU machine, or "
            "pass --tiny or --device cpu for a dry run of the script on the CPU."
        )
    results = {}
    for setting in args.settings:
        print(f"\n[{setting}]")
        results[setting] = measure(args, device, setting)
    if len(results) > 1:
        print("\nsetting       step s   tokens/s   TFLOP/s      MFU   peak GiB")
        for setting, r in results.items():
            mfu = f"{r['mfu']:.4f}" if r["mfu"] is not None else "n/a"
            print(
                f"{setting:<12} {r['step_s_median']:7.4f} {r['tokens_per_s']:10.1f} {r['achieved_tflops']:9.2f} "
                f"{mfu:>8} {r['peak_memory_bytes'] / 2**30:10.3f}"
            )
    result = results[args.settings[0]] if len(results) == 1 else {"settings": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def measure(args: argparse.Namespace, device: torch.device, setting: str) -> dict[str, Any]:
    """Build ``setting``, warm up, time ``--steps`` steps; print and return the measurements."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    module, optimizer, batch = build(args, device, setting)
    autocast = args.precision == "bf16-mixed"
    warmup_s = []
    for _ in range(args.warmup):
        _sync(device)
        start = time.perf_counter()
        step(module, optimizer, batch, autocast)
        _sync(device)
        warmup_s.append(time.perf_counter() - start)
    if setting == "compiled" and warmup_s:
        print(f"first step (compilation included, not timed below): {warmup_s[0]:.1f} s")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(args.steps):
        _sync(device)
        start = time.perf_counter()
        losses.append(step(module, optimizer, batch, autocast))
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)

    flops = model_flops(module, batch)
    total_flops = sum(flops.values())
    achieved = total_flops / seconds
    peak, peak_source = spec_peak(device)
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops * 1e12, "--peak-tflops"
    measured = matmul_peak(device, 8192 if device.type == "cuda" else 512)
    tokens = batch["input_ids"].numel()
    if device.type == "cuda":
        peak_memory = torch.cuda.max_memory_allocated(device)
        memory_source = "torch.cuda.max_memory_allocated"
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        memory_source = "process peak RSS (CPU dry run)"
    params = sum(p.numel() for p in module.network.parameters())
    trainable = sum(p.numel() for p in module.network.parameters() if p.requires_grad)

    result = {
        "setting": setting,
        "first_warmup_step_s": warmup_s[0] if warmup_s else None,
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "parameters": params,
        "trainable_parameters": trainable,
        "batch": args.batch,
        "sequence": batch["input_ids"].shape[1],
        "image_tokens": module.num_image_tokens,
        "precision": args.precision,
        "activation_checkpointing": args.activation_checkpointing,
        "llm_placement": args.llm,
        "step_s_median": seconds,
        "tokens_per_s": tokens / seconds,
        "flops_per_step": flops,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak / 1e12 if peak else None,
        "peak_source": peak_source,
        "mfu": achieved / peak if peak else None,
        "matmul_tflops": measured / 1e12,
        "utilisation_vs_matmul": achieved / measured,
        "peak_memory_bytes": peak_memory,
        "peak_memory_source": memory_source,
        "losses": losses,
    }
    print(f"model: {args.model} ({params / 1e6:.1f}M parameters, {trainable / 1e6:.1f}M trained) on {result['device']}")
    print(f"batch: {args.batch} x {result['sequence']} positions ({module.num_image_tokens} image tokens per sample)")
    print(f"step time, median s: {seconds:.4f}")
    print(f"tokens/s: {tokens / seconds:.1f}")
    print(
        f"model TFLOP/step: {total_flops / 1e12:.3f} ("
        + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in flops.items())
        + ")"
    )
    print(f"achieved TFLOP/s: {achieved / 1e12:.2f}")
    if peak:
        print(f"MFU: {achieved / peak:.4f} (peak {peak / 1e12:.0f} TFLOP/s bf16 dense, {peak_source})")
    else:
        print(f"MFU: n/a (peak {peak_source})")
    print(f"utilisation ratio model/measured matmul peak: {achieved / measured:.4f} ({measured / 1e12:.2f} TFLOP/s)")
    print(f"peak memory: {peak_memory / 2**30:.3f} GiB ({memory_source})")
    return result


if __name__ == "__main__":
    main()
