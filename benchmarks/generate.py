"""Benchmark: greedy generation, lightning_mm's ``VisionLanguageModel.generate`` vs. transformers' LLaVA ``generate``.

Both sides run the very same weights: our network is built from configs (random init, nothing is downloaded; the
layout of ``benchmarks/_llava.py``: CLIP-style ViT, block -2 without CLS, ``mlp2x_gelu``, Llama) and
``lightning_mm.interop.to_hf_model`` puts its weights into ``LlavaForConditionalGeneration`` under transformers'
names. Norm weights and biases are perturbed away
from their init first, so a wrong mapping cannot hide behind ones and zeros.

The batch is LLaVA-shaped: ``--batch`` prompts, each ``--prompt-tokens`` text tokens, one ``--image-size`` image
(576 image tokens at 336 px, patch 14) and a question, ``--text-tokens`` text tokens in all; every other prompt is
left-padded by ``--pad`` tokens (batched generation pads on the left). Each side generates ``--new-tokens`` tokens
greedily with the KV cache (``min_new_tokens`` keeps both from stopping early, so both produce the same count):

* ours: ``VisionLanguageModel.generate`` (tower + projector + splice once, then the LLM's ``generate`` from the
  spliced embeddings), what ``MultimodalModule.predict_step`` and ``lightning-mm chat`` run;
* hf: ``LlavaForConditionalGeneration.generate(input_ids, pixel_values, attention_mask)``.

Measured: tokens/s = batch x new tokens / wall time of one ``generate`` call, on interleaved passes (one call per side,
the order alternating), ``--repeats`` passes after a warm-up; the ratio is the median over passes of ours/hf in the
same pass. The generated tokens of the timed dtype are compared (same tokens: every position equal); ``--check-dtype``
(default float64) repeats the comparison in that dtype, where both sides compute the same function to rounding.

Usage::

    python benchmarks/generate.py                 # batch 8, 576 image tokens, 64 new tokens, float32
    python benchmarks/generate.py --profile       # + torch.profiler table of our generate
    python benchmarks/generate.py --device cuda --dtype bfloat16
    python benchmarks/generate.py --tiny          # seconds, for CI
    python benchmarks/generate.py --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _harness import TINY_MODEL, apply_tiny, benchmark_parser, timed, write_json
from _llava import add_size_args, image_tokens, ours_overrides

from lightning_mm import MultimodalModule
from lightning_mm.interop.export import to_hf_model

TARGET = 1.0  # tokens/s ours/hf: ours must not be slower
TINY = {**TINY_MODEL, "batch": 2, "text_tokens": 16, "new_tokens": 4, "pad": 2, "repeats": 1}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    add_size_args(parser, batch=8, text_tokens=48, text_help="text tokens per prompt (besides the image)")
    parser.add_argument("--prompt-tokens", type=int, default=4, help="text tokens before the image")
    parser.add_argument("--pad", type=int, default=8, help="left padding of every other prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (one generate per side each)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="dtype of the timing")
    parser.add_argument("--check-dtype", choices=["float64", "float32", "none"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of our generate")
    parser.add_argument("--profile-rows", type=int, default=20)
    args = apply_tiny(parser.parse_args(argv), TINY)
    if args.image_size % args.patch_size:
        parser.error("--image-size must be a multiple of --patch-size")
    if not 0 <= args.prompt_tokens < args.text_tokens or args.repeats < 1 or args.new_tokens < 1:
        parser.error("need 0 <= prompt-tokens < text-tokens, repeats >= 1, new-tokens >= 1")
    return args


# ----------------------------------------------------------------------------------------------------------------------
# The two sides, on the same weights
# ----------------------------------------------------------------------------------------------------------------------


def build_pair(args: argparse.Namespace):
    """(our network, transformers' LLaVA on the same weights, image token id), float32, eval mode, on the CPU.

    transformers' side is :func:`lightning_mm.interop.to_hf_model` of our network: the project's converter renames (and
    splits) the weights into ``LlavaForConditionalGeneration``'s, which holds them (shared, not copied).
    """

    torch.manual_seed(args.seed)
    module = MultimodalModule(model="tiny", model_overrides=ours_overrides(args))
    module.configure_model()
    ours = module.network.eval()
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():  # norms and biases away from their init (ones / zeros)
        for p in ours.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    hf = to_hf_model(ours, "llava")
    hf.set_attn_implementation("sdpa")
    return ours, hf.eval(), module.image_token_id


def make_prompts(args: argparse.Namespace, image_token_id: int) -> dict:
    """Left-padded LLaVA prompts: text, image tokens, question; every other prompt shorter by ``--pad`` tokens."""
    gen = torch.Generator().manual_seed(args.seed)
    b, n_img = args.batch, image_tokens(args)
    seq = n_img + args.text_tokens
    low = image_token_id + 1  # text ids above the image id (the synthetic tokenizer's specials are below it)
    input_ids = torch.randint(low, args.vocab, (b, seq), generator=gen)  # (B, T)
    input_ids[:, args.prompt_tokens : args.prompt_tokens + n_img] = image_token_id
    attention_mask = torch.ones(b, seq, dtype=torch.long)  # (B, T)
    pad = min(args.pad, args.prompt_tokens)  # the padding replaces leading text tokens, never image tokens
    attention_mask[1::2, :pad] = 0
    input_ids[1::2, :pad] = 0
    pixel_values = torch.randn(b, 3, args.image_size, args.image_size, generator=gen)  # (B, 3, S, S) normalised
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def generate_kwargs(args: argparse.Namespace) -> dict:
    return {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,  # both sides produce every token (no early end of sequence)
        "do_sample": False,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }


def run_ours(ours, batch: dict, args: argparse.Namespace) -> torch.Tensor:
    """(B, new_tokens) tokens generated by our network."""
    return ours.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], **generate_kwargs(args))


def run_hf(hf, batch: dict, args: argparse.Namespace) -> torch.Tensor:
    """(B, new_tokens) tokens generated by transformers' LLaVA (the prompt cut off)."""
    with torch.no_grad():
        out = hf.generate(**batch, **generate_kwargs(args))
    return out[:, batch["input_ids"].shape[1] :]


def on(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(ours, hf, batch: dict, args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> dict:
    """Generate with both sides in ``dtype``: are the tokens the same?"""
    ours.to(device, dtype)
    hf.to(device, dtype)
    data = on(batch, device, dtype)
    with torch.no_grad():  # next-token logits of the prompts: the same function on both sides?
        hidden = ours(data["input_ids"], data["attention_mask"], data["pixel_values"])[:, -1]  # (B, H)
        mine = ours.lm_head(hidden)  # (B, V)
        theirs = hf(**data, logits_to_keep=1).logits[:, -1]  # (B, V)
    rel = float((mine - theirs).abs().max() / theirs.abs().max())
    a, b = run_ours(ours, data, args).cpu(), run_hf(hf, data, args).cpu()
    same = a.shape == b.shape and bool(torch.equal(a, b))
    agree = float((a == b).float().mean()) if a.shape == b.shape else 0.0
    first = None
    if not same and a.shape == b.shape:
        rows, cols = (a != b).nonzero(as_tuple=True)
        first = {"sample": int(rows[0]), "position": int(cols[0])}
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "logits_max_rel_diff": rel,
        "same": same,
        "agreement": agree,
        "first_difference": first,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ours, hf, image_token_id = build_pair(args)
    batch = make_prompts(args, image_token_id)
    n_img = image_tokens(args)
    print(
        f"shape: B={args.batch} prompt T={n_img + args.text_tokens} (image {n_img} + text {args.text_tokens}, every "
        f"other prompt left-padded by {min(args.pad, args.prompt_tokens)}), {args.new_tokens} new tokens, greedy, "
        f"KV cache; dtype {args.dtype}, device {device}, threads {torch.get_num_threads()}"
    )
    params = sum(p.numel() for p in ours.parameters())
    print(f"parameters: ours {params:,}, hf {sum(p.numel() for p in hf.parameters()):,}")

    checks = []
    if args.check_dtype != "none":
        checks.append(compare(ours, hf, batch, args, DTYPES[args.check_dtype], device))
        print(f"checked in {args.check_dtype}: same tokens {checks[-1]['same']}", file=sys.stderr)

    dtype = DTYPES[args.dtype]
    ours.to(device, dtype)
    hf.to(device, dtype)
    data = on(batch, device, dtype)
    outputs = {}

    def call(side: str) -> tuple[float, float]:
        """(wall, CPU) seconds of one ``generate`` of ``side``."""

        def go():
            outputs[side] = run_ours(ours, data, args) if side == "ours" else run_hf(hf, data, args)
            synchronize(device)

        _, wall, cpu = timed(go)
        return wall, cpu

    call("ours"), call("hf")  # warm-up: thread pools, kernels, allocator
    timed_dtype = {"dtype": args.dtype}
    a, b = outputs["ours"].cpu(), outputs["hf"].cpu()
    timed_dtype["same"] = a.shape == b.shape and bool(torch.equal(a, b))
    timed_dtype["agreement"] = float((a == b).float().mean()) if a.shape == b.shape else 0.0
    checks.append(timed_dtype)

    passes = []
    tokens = args.batch * args.new_tokens
    for k in range(args.repeats):
        order = ("ours", "hf") if k % 2 == 0 else ("hf", "ours")
        seconds = {side: call(side) for side in order}  # side -> (wall, cpu)
        (ours_s, ours_cpu), (hf_s, hf_cpu) = seconds["ours"], seconds["hf"]
        passes.append(
            {"ours_s": ours_s, "hf_s": hf_s, "ratio": hf_s / ours_s, "ours_cpu_s": ours_cpu, "hf_cpu_s": hf_cpu}
        )
        print(f"pass {k + 1}/{args.repeats}: ours {ours_s:.2f} s, hf {hf_s:.2f} s (wall)", file=sys.stderr)
    ours_tps = tokens / statistics.median(p["ours_s"] for p in passes)
    hf_tps = tokens / statistics.median(p["hf_s"] for p in passes)
    ratio = statistics.median(p["ratio"] for p in passes)  # tokens/s ours / hf, per pass
    # CPU seconds of all threads: less sensitive to other jobs on the machine than wall time (spin-waits still count)
    cpu_ratio = statistics.median(p["hf_cpu_s"] / p["ours_cpu_s"] for p in passes)

    for check in checks:
        print(
            f"same tokens ({check['dtype']}): {'yes' if check['same'] else 'NO'} "
            f"(agreement {check['agreement']:.4f}"
            + (f", first difference {check['first_difference']}" if check.get("first_difference") else "")
            + ")"
        )
    for check in checks:
        if "logits_max_rel_diff" in check:
            rel = check["logits_max_rel_diff"]
            print(
                f"prompt logits ({check['dtype']}): max rel diff {rel:.2e} (<= 1e-6: {'yes' if rel <= 1e-6 else 'NO'})"
            )
    print(f"tokens/s (median of {args.repeats} passes): ours {ours_tps:.1f}, hf {hf_tps:.1f}")
    print("per pass ours/hf tokens/s: " + " ".join(f"{p['ratio']:.3f}" for p in passes))
    verdict = "PASS" if ratio >= TARGET else "MISS"
    print(f"tokens/s ratio ours/hf: {ratio:.4f} (target >= {TARGET:.1f}; median over interleaved passes) {verdict}")
    print(f"  cross-check, tokens per CPU second ours/hf: {cpu_ratio:.4f}")

    profile = None
    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run_ours(ours, data, args)
        profile = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)
        print("\nprofile of our generate (torch.profiler, top ops by self CPU time):")
        print(profile)

    write_json(
        args.json,
        {
            "config": {k: v for k, v in vars(args).items() if k not in ("child", "json")},
            "passes": passes,
            "ours_tokens_per_s": ours_tps,
            "hf_tokens_per_s": hf_tps,
            "tokens_per_s_ratio": ratio,
            "tokens_per_cpu_s_ratio": cpu_ratio,
            "target": TARGET,
            "pass": ratio >= TARGET,
            "checks": checks,
            "same_tokens": {c["dtype"]: c["same"] for c in checks},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
