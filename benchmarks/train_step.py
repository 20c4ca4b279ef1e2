"""Benchmark: one LLaVA LoRA-finetune training step, transformers' ``LlavaForConditionalGeneration`` vs. ours.

Both sides build the same architecture from configs (random init, nothing is downloaded) and train it the way
LLaVA-1.5's LoRA finetune does: frozen vision tower, fully trained projector, LoRA (r=128, alpha=256, dropout 0.05)
on every linear layer of the LLM's decoder (q/k/v/o/gate/up/down), frozen embeddings and ``lm_head``.

* ``hf``:   ``LlavaForConditionalGeneration`` (CLIP vision tower, ``vision_feature_layer=-2``,
  ``vision_feature_select_strategy="default"``, so CLS is dropped) + peft LoRA on its language model; the loss comes
  from ``labels`` (full ``(B, T, V)`` float32 logits, then ``ForCausalLMLoss``).
* ``ours``: :class:`lightning_mm.MultimodalModule` with the same sizes (timm CLIP-style ViT: pre-norm, QuickGELU,
  block -2, CLS dropped; ``mlp2x_gelu``; Llama), through its seams: ``forward`` (hidden states) and ``compute_loss``
  (``lm_head`` on the supervised rows only, chunked).

A step is forward + loss + backward + ``AdamW.step`` on the trainable parameters (float32 on CPU; ``--dtype bfloat16``
runs the forward under CPU bf16 autocast on both sides). The batch is LLaVA-shaped: ``--batch`` samples, one
``--image-size`` image each (576 image tokens at 336 px, patch 14) spliced after a short prompt, ``--text-tokens``
text tokens of which the last ``--answer-tokens`` (the answer) are supervised.

Measurements (the same thread count everywhere):

* peak memory: each side in its own subprocess (this script re-invoked with ``--side``); growth of ``ru_maxrss``
  over a baseline taken after the model, the optimiser and the batch are built (``malloc_trim`` and
  ``/proc/self/clear_refs`` first reset the high-water mark to the resident size). First step: the first full-size
  step, including the AdamW state and one-off library buffers; steady: the second step. ``--rounds`` repeats the
  subprocesses in alternating order; the median is reported.
* step time: on a shared machine the load changes faster than a subprocess runs, so the time ratio is measured on
  interleaved steps: one more subprocess (``--paired``) builds every side and runs ``--pairs`` passes of one step per
  side, rotating the order; the ratio is the median over passes of (side's step / hf's step in the same pass). The
  median step times of the per-side subprocesses (``--repeats`` steps each) are printed as a cross-check.
* time split per stage (vision tower, projector + splice, LLM forward, loss, backward, optimiser), from forward hooks
  (CPU ops run synchronously), median over all timed steps.

``--profile`` adds a ``torch.profiler`` table (top ops by self CPU time) of one step of ours (``--profile-side`` for
the other or both). ``--ours-variants`` measures optimisation proposals for ``lightning_mm`` (monkeypatched here, see
``PATCHES``) as extra sides.

Usage::

    python benchmarks/train_step.py                       # full size (about 10 minutes on 2 shared cores)
    python benchmarks/train_step.py --profile             # + profile of our step
    python benchmarks/train_step.py --activation-checkpointing   # LLaVA's finetune setting, both sides
    python benchmarks/train_step.py --ours-variants ac,peft-dropout
    python benchmarks/train_step.py --tiny                # seconds, for CI
    python benchmarks/train_step.py --json out.json
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

from _llava import add_size_args, hf_llava_config, image_tokens, ours_overrides
from _memory import current_rss_mib, malloc_trim, maxrss_mib, nan_to_none, none_to_nan, reset_peak_rss

TIME_TARGET = 1 / 1.5  # ours/hf step time (ours >= 1.5x faster)
MEMORY_TARGET = 1 / 3  # ours/hf peak memory growth (ours >= 3x lower)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STAGES = ("vision", "projector+splice", "llm_forward", "loss", "backward", "optimizer")
TINY = {
    "batch": 2,
    "image_size": 56,
    "patch_size": 14,
    "vision_dim": 32,
    "vision_depth": 3,
    "vision_heads": 2,
    "hidden": 32,
    "layers": 2,
    "heads": 2,
    "intermediate": 64,
    "vocab": 512,
    "text_tokens": 24,
    "answer_tokens": 8,
    "lora_r": 4,
    "lora_alpha": 8,
    "repeats": 1,
    "rounds": 1,
    "pairs": 2,
}
# Options the parent hands to its children (the fully resolved configuration, after --tiny).
CHILD_KEYS = (
    "batch",
    "image_size",
    "patch_size",
    "vision_dim",
    "vision_depth",
    "vision_heads",
    "hidden",
    "layers",
    "heads",
    "intermediate",
    "vocab",
    "text_tokens",
    "answer_tokens",
    "prompt_tokens",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lr",
    "repeats",
    "pairs",
    "dtype",
    "threads",
    "seed",
    "activation_checkpointing",
    "ours_variants",
)

# Optimisation proposals for lightning_mm, measured on ours by monkeypatching in the benchmark process
# (--ours-variants). Each is a candidate change to the package; delete an entry once the package does it itself.
PATCHES = {
    "ac": "MultimodalModule(activation_checkpointing=True): decoder layers recomputed in backward (ours only)",
    "peft-dropout": "peft's own LoRA dropout (nn.Dropout before lora_A, keeping a float mask and the dropped copy of "
    "the input for backward) instead of lightning_mm's fused DropoutLinear (the input and a bool mask)",
    "fused-adamw": "torch.optim.AdamW(fused=True) instead of the per-parameter for-loop implementation",
    "frozen-bf16": "with --dtype bfloat16: the frozen Linear/Conv layers (vision tower, LoRA base layers, lm_head) "
    "stored in bfloat16, so autocast no longer casts their weights on every forward (and recompute); norms and "
    "embeddings stay float32, so the numerics are autocast's",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_args(parser, batch=4, text_tokens=128, text_help="text tokens per sample (besides the image)")
    parser.add_argument("--answer-tokens", type=int, default=96, help="supervised answer tokens per sample")
    parser.add_argument("--prompt-tokens", type=int, default=4, help="text tokens before the image")
    parser.add_argument("--lora-r", type=int, default=128)
    parser.add_argument("--lora-alpha", type=int, default=256)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--pairs", type=int, default=6, help="interleaved timing passes (one step per side each)")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps in each per-side subprocess")
    parser.add_argument("--rounds", type=int, default=1, help="per-side subprocess launches (alternating order)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="checkpoint the LLM decoder layers on both sides (LLaVA's finetune scripts set gradient_checkpointing)",
    )
    parser.add_argument(
        "--ours-variants",
        type=str,
        default="",
        help="comma-separated variants of ours measured as extra sides, each a '+'-joined set of "
        f"{sorted(PATCHES)} (optimisation proposals applied by monkeypatching, e.g. 'ac,peft-dropout')",
    )
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=None,
        help="set glibc's MALLOC_MMAP_THRESHOLD_ (bytes) in the children: a fixed threshold stops the heap from "
        "keeping freed mid-sized tensors resident, so ru_maxrss follows the live tensors (allocator-neutral memory)",
    )
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step")
    parser.add_argument("--profile-side", choices=["ours", "hf", "both"], default="ours")
    parser.add_argument("--profile-rows", type=int, default=25)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes for CI (overrides the size options)")
    parser.add_argument("--json", type=str, default=None, help="write the results to this path")
    parser.add_argument("--side", choices=["hf", "ours"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--paired", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image-token-id", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--patches", type=str, default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    if args.image_size % args.patch_size:
        parser.error("--image-size must be a multiple of --patch-size")
    for variant in variants_of(args):
        unknown = set(variant.split("+")) - set(PATCHES)
        if unknown:
            parser.error(f"unknown patch(es) {sorted(unknown)} in --ours-variants; known: {sorted(PATCHES)}")
    if not 1 <= args.answer_tokens <= args.text_tokens - args.prompt_tokens - 1:
        parser.error("need 1 <= answer-tokens <= text-tokens - prompt-tokens - 1")
    if args.repeats < 1 or args.rounds < 1 or args.pairs < 0:
        parser.error("need repeats >= 1, rounds >= 1, pairs >= 0")
    return args


def variants_of(args: argparse.Namespace) -> list[str]:
    return [v for v in args.ours_variants.split(",") if v]


def side_name(side: str, patches: str) -> str:
    return f"{side}[{patches}]" if patches else side


def sides_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(side, patches) of every measured side: hf, ours, then ours with each variant's patches."""
    return [("hf", ""), ("ours", "")] + [("ours", v) for v in variants_of(args)]


# ----------------------------------------------------------------------------------------------------------------------
# The two sides
# ----------------------------------------------------------------------------------------------------------------------


def lora_config(args: argparse.Namespace, target_modules):
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=target_modules
    )


def _unfuse_lora_dropout(root) -> int:
    """Patch ``peft-dropout``: put peft's ``nn.Dropout`` + ``nn.Linear`` back where lightning_mm fused them."""
    from torch import nn

    from lightning_mm.callbacks.lora import lora_layers
    from lightning_mm.callbacks.lora_dropout import DropoutLinear

    count = 0
    for layer in lora_layers(root).values():
        for name, lora_a in list(layer.lora_A.items()):
            if isinstance(lora_a, DropoutLinear):
                plain = nn.Linear(lora_a.in_features, lora_a.out_features, bias=False, device="meta")
                plain.weight = lora_a.weight
                layer.lora_A[name] = plain
                layer.lora_dropout[name] = nn.Dropout(lora_a.p)
                count += 1
    return count


def build_ours(args: argparse.Namespace):
    """MultimodalModule at benchmark size with LLaVA's LoRA-finetune placement (+ the ``--patches`` proposals)."""
    import torch

    from lightning_mm import MultimodalModule
    from lightning_mm.callbacks import Placement
    from lightning_mm.models import decoder_of

    patches = set(filter(None, args.patches.split("+")))
    overrides = ours_overrides(args)
    adamw_kwargs = {"lr": args.lr, **({"fused": True} if "fused-adamw" in patches else {})}
    module = MultimodalModule(
        model="tiny",
        model_overrides=overrides,
        optimizer=lambda params: torch.optim.AdamW(params, **adamw_kwargs),
        activation_checkpointing=args.activation_checkpointing or "ac" in patches,
    )
    module.configure_model()
    net = module.network
    # Placement of LLaVA's LoRA finetune, with lightning_mm's placements (what FreezeComponent / FullComponent /
    # LoRAComponent apply in a Trainer)
    Placement("frozen").apply(module, "vision")
    Placement("full").apply(module, "projector")
    lora = Placement("lora", args.lora_r, args.lora_alpha, args.lora_dropout, target_modules=LORA_TARGETS)
    lora.apply(module, "llm")
    if "peft-dropout" in patches:
        _unfuse_lora_dropout(net.llm)
    if "frozen-bf16" in patches:
        for mod in net.modules():
            if isinstance(mod, torch.nn.Linear | torch.nn.Conv2d) and not any(
                p.requires_grad for p in mod.parameters()
            ):
                mod.to(torch.bfloat16)
    optimizer = module.optimizer_factory(module.param_groups())
    module.train()
    parts = {"vision": net.vision, "projector": net.projector, "llm": decoder_of(net.llm)}

    def forward_loss(batch):
        hidden = module(batch)  # (B, T, H)
        loss_sum, n_items = module.compute_loss(hidden, batch["labels"])
        return loss_sum / n_items.clamp(min=1)

    return module, module.image_token_id, forward_loss, optimizer, parts


def build_hf(args: argparse.Namespace):
    """transformers' LlavaForConditionalGeneration at benchmark size + peft LoRA on its language model."""
    import torch
    from peft import inject_adapter_in_model
    from transformers import LlavaForConditionalGeneration

    config = hf_llava_config(args, args.image_token_id)
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa")
    targets = r".*language_model\..*\.(" + "|".join(LORA_TARGETS) + ")"
    inject_adapter_in_model(lora_config(args, targets), model)
    if args.activation_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    for name, p in model.named_parameters():
        if ".vision_tower." in name:
            p.requires_grad_(False)
        elif ".multi_modal_projector." in name:
            p.requires_grad_(True)
        else:
            p.requires_grad_(".lora_" in name)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    model.train()
    parts = {
        "vision": model.model.vision_tower,
        "projector": model.model.multi_modal_projector,
        "llm": model.model.language_model,
    }

    def forward_loss(batch):
        out = model(
            input_ids=batch["input_ids"],
            pixel_values=batch["pixel_values"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        return out.loss

    return model, args.image_token_id, forward_loss, optimizer, parts


def make_batch(args: argparse.Namespace, image_token_id: int, batch_size: int | None = None) -> dict:
    """LLaVA-shaped batch: prompt, image tokens, question, answer; only the answer is supervised."""
    import torch

    gen = torch.Generator().manual_seed(args.seed)
    b = batch_size or args.batch
    n_img = image_tokens(args)
    seq = n_img + args.text_tokens
    low = image_token_id + 1  # text ids above the image id (the synthetic tokenizer's specials are below it)
    input_ids = torch.randint(low, args.vocab, (b, seq), generator=gen)  # (B, T)
    input_ids[:, args.prompt_tokens : args.prompt_tokens + n_img] = image_token_id
    labels = torch.full((b, seq), -100, dtype=torch.long)  # (B, T)
    labels[:, -args.answer_tokens :] = input_ids[:, -args.answer_tokens :]
    pixel_values = torch.randn(b, 3, args.image_size, args.image_size, generator=gen)  # (B, 3, S, S)
    attention_mask = torch.ones(b, seq, dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels, "pixel_values": pixel_values, "attention_mask": attention_mask}


class StageClock:
    """Forward hooks timing the vision tower, the projector and the LLM decoder (CPU ops run synchronously)."""

    def __init__(self, parts: dict) -> None:
        self.marks: dict[str, float] = {}
        self._ranges: dict[str, object] = {}
        for name, mod in parts.items():
            mod.register_forward_pre_hook(self._pre(name))
            mod.register_forward_hook(self._post(name))

    def _pre(self, name: str):
        import torch

        def hook(mod, args):
            self.marks[f"{name}_start"] = time.perf_counter()
            rf = torch.profiler.record_function(f"## {name} forward ##")
            rf.__enter__()
            self._ranges[name] = rf

        return hook

    def _post(self, name: str):
        def hook(mod, args, out):
            self.marks[f"{name}_end"] = time.perf_counter()
            rf = self._ranges.pop(name, None)
            if rf is not None:
                rf.__exit__(None, None, None)

        return hook


class Side:
    """One side built in this process: model, optimiser, batch, and its training step."""

    def __init__(self, args: argparse.Namespace, side: str, patches: str) -> None:
        import torch

        self.name = side_name(side, patches)
        side_args = argparse.Namespace(**{**vars(args), "side": side, "patches": patches})
        torch.manual_seed(args.seed)
        build = build_ours if side == "ours" else build_hf
        self.model, image_token_id, self.forward_loss, self.optimizer, self.parts = build(side_args)
        self.batch = make_batch(args, image_token_id)
        self.small_batch = make_batch(args, image_token_id, batch_size=1)
        self.clock = StageClock(self.parts)
        self.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def warmup(self) -> None:
        """Start the thread pool and the kernels on one sample without grad (no gradient or optimiser state)."""
        import torch

        with torch.no_grad(), self.autocast():
            self.forward_loss(self.small_batch)

    def step(self) -> dict:
        """One training step: loss, wall and CPU seconds, and the split per stage."""
        import torch

        t0, cpu0 = time.perf_counter(), time.process_time()
        with self.autocast(), torch.profiler.record_function("## forward + loss ##"):
            loss = self.forward_loss(self.batch)
        t1 = time.perf_counter()
        with torch.profiler.record_function("## backward ##"):
            loss.backward()
        t2 = time.perf_counter()
        with torch.profiler.record_function("## optimizer ##"):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        t3, cpu3 = time.perf_counter(), time.process_time()
        m = self.clock.marks
        vision = m["vision_end"] - m["vision_start"]
        split = {
            "vision": vision,
            "projector+splice": (m["llm_start"] - t0) - vision,
            "llm_forward": m["llm_end"] - m["llm_start"],
            "loss": t1 - m["llm_end"],  # ours: lm_head on supervised rows + CE + its gradients; hf: logits + CE
            "backward": t2 - t1,
            "optimizer": t3 - t2,
        }
        # CPU seconds of all threads: less sensitive to the load than wall time (spin-waits still count)
        return {"loss": float(loss.detach()), "wall_s": t3 - t0, "cpu_s": cpu3 - cpu0, "split_s": split}

    def param_counts(self) -> dict:
        counts = {}
        for name, mod in [*self.parts.items(), ("all", self.model)]:
            counts[name] = {
                "total": sum(p.numel() for p in mod.parameters()),
                "trainable": sum(p.numel() for p in mod.parameters() if p.requires_grad),
            }
        return counts


def run_side(args: argparse.Namespace) -> dict:
    """Child: peak memory and a few timed steps of one side, alone in this process."""
    import torch

    torch.set_num_threads(args.threads)
    side = Side(args, args.side, args.patches)
    side.warmup()

    def measure_peak() -> tuple[float, float, bool, float]:
        malloc_trim()
        reset = reset_peak_rss()
        baseline = maxrss_mib()
        slack = max(0.0, baseline - current_rss_mib())  # high-water mark above the resident size: unseen growth
        result = side.step()
        return maxrss_mib() - baseline, slack, reset, result["loss"]

    baseline_rss = current_rss_mib()
    peak_first, slack_first, peak_reset, loss = measure_peak()  # includes the AdamW state and one-off buffers
    if peak_reset:
        peak_steady, slack_steady, _, _ = measure_peak()
    else:
        peak_steady, slack_steady = float("nan"), float("nan")
    steps = [side.step() for _ in range(args.repeats)]

    profile = None
    if args.profile and args.profile_side in (args.side, "both"):
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            side.step()
        profile = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)

    return {
        "side": side.name,
        "loss": loss,
        "baseline_rss_mib": baseline_rss,
        "peak_mib": peak_first,
        "peak_steady_mib": peak_steady,
        "baseline_slack_mib": max(slack_first, slack_steady) if peak_reset else slack_first,
        "peak_reset": peak_reset,
        "steps": steps,
        "params": side.param_counts(),
        "profile": profile,
    }


def run_paired(args: argparse.Namespace) -> dict:
    """Child: every side in this process, ``--pairs`` passes of one step per side in rotating order."""
    import torch

    torch.set_num_threads(args.threads)
    sides = [Side(args, side, patches) for side, patches in sides_of(args)]
    for side in sides:
        side.warmup()
        side.step()  # the first step allocates the AdamW state
    passes = []
    for i in range(args.pairs):
        order = sides[i % len(sides) :] + sides[: i % len(sides)]
        passes.append({side.name: side.step() for side in order})
    return {"passes": passes}


# ----------------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------------


def launch(argv: list[str], mmap_threshold: int | None = None) -> dict:
    env = dict(os.environ)
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    env["OMP_NUM_THREADS"] = argv[argv.index("--threads") + 1]  # same thread count everywhere
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-4:])} failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
    return none_to_nan(json.loads(proc.stdout.strip().splitlines()[-1]))


def _ours_image_token_id() -> int:
    """The image-token id ours gets from its tokenizer; the HF side is configured with the same id."""
    from lightning_mm.zoo import get_spec, load_tokenizer

    spec = get_spec("tiny")
    return int(load_tokenizer(spec).convert_tokens_to_ids(spec.image_token))


def _child_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--image-token-id", str(args.image_token_id)]
    for key in CHILD_KEYS:
        value = getattr(args, key)
        if isinstance(value, bool):
            argv += [f"--{key.replace('_', '-')}"] if value else []
        else:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _summarise(name: str, isolated: list[dict], passes: list[dict]) -> dict:
    """One side's results: memory (median over rounds), step times, split per stage."""
    res = dict(isolated[0])
    for key in ("peak_mib", "peak_steady_mib", "baseline_rss_mib"):
        values = [r[key] for r in isolated if not math.isnan(r[key])]
        res[key] = statistics.median(values) if values else float("nan")
        res[f"{key}_rounds"] = [r[key] for r in isolated]
    res["baseline_slack_mib"] = max(r["baseline_slack_mib"] for r in isolated)
    res["isolated_steps"] = [s for r in isolated for s in r["steps"]]
    res["paired_steps"] = [p[name] for p in passes]
    res.pop("steps", None)
    res["isolated_median_s"] = statistics.median(s["wall_s"] for s in res["isolated_steps"])
    timed = res["paired_steps"] or res["isolated_steps"]
    res["median_s"] = statistics.median(s["wall_s"] for s in timed)
    res["min_s"] = min(s["wall_s"] for s in timed)
    res["median_cpu_s"] = statistics.median(s["cpu_s"] for s in timed)
    all_steps = res["paired_steps"] + res["isolated_steps"]
    res["split_median_s"] = {k: statistics.median(s["split_s"][k] for s in all_steps) for k in STAGES}
    res["profile"] = next((r["profile"] for r in isolated if isinstance(r.get("profile"), str)), None)
    return res


def _paired_ratio(passes: list[dict], name: str, ref: str, key: str = "wall_s") -> float:
    """Median over passes of (``name``'s step / ``ref``'s step in the same pass)."""
    ratios = [p[name][key] / p[ref][key] for p in passes if p[ref][key] > 0]
    return statistics.median(ratios) if ratios else float("nan")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.side is not None:
        print(json.dumps(nan_to_none(run_side(args))))
        return 0
    if args.paired:
        print(json.dumps(nan_to_none(run_paired(args))))
        return 0

    args.image_token_id = _ours_image_token_id()
    child_argv = _child_argv(args)
    profile_argv = ["--profile", "--profile-side", args.profile_side, "--profile-rows", str(args.profile_rows)]
    sides = sides_of(args)
    isolated: dict[str, list[dict]] = {side_name(*s): [] for s in sides}
    for round_ in range(args.rounds):
        # alternate the order, so that a change of load on the shared machine does not land on one side only
        for side, patches in sides if round_ % 2 == 0 else sides[::-1]:
            extra = profile_argv if args.profile and round_ == 0 and not patches else []  # profile once
            isolated[side_name(side, patches)].append(
                launch(child_argv + extra + ["--side", side, "--patches", patches], args.mmap_threshold)
            )
    passes = launch(child_argv + ["--paired"], args.mmap_threshold)["passes"] if args.pairs else []
    results = {name: _summarise(name, runs, passes) for name, runs in isolated.items()}
    hf, ours = results["hf"], results["ours"]

    def ratio(res: dict, ref: dict, key: str) -> float:
        return res[key] / ref[key] if ref[key] > 0 else float("nan")

    def time_ratio_of(res: dict, ref: dict, key: str = "wall_s") -> float:
        if passes:
            return _paired_ratio(passes, res["side"], ref["side"], key)
        return ratio(res, ref, "median_s" if key == "wall_s" else "median_cpu_s")

    mem_ratio, steady_ratio = ratio(ours, hf, "peak_mib"), ratio(ours, hf, "peak_steady_mib")
    time_ratio, cpu_ratio = time_ratio_of(ours, hf), time_ratio_of(ours, hf, "cpu_s")
    isolated_ratio = ratio(ours, hf, "isolated_median_s")

    def verdict(value: float, target: float) -> str:
        if math.isnan(value):
            return "n/a"
        return "PASS" if value <= target else "MISS"

    if args.tiny:
        print("note: --tiny is a smoke test; its sizes are too small for the ratios to mean anything")
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
        print(
            f"  {comp:<10} "
            + "  ".join(
                f"{r['side']} {r['params'][comp]['trainable']:>10,} / {r['params'][comp]['total']:>11,}"
                for r in (hf, ours)
            )
        )
    width = max(len(n) for n in results) + 1
    print(
        f"{'side':<{width}} {'loss':>8} {'baseline MiB':>13} {'peak MiB (1st)':>15} {'peak MiB (steady)':>18} "
        f"{'step s':>7} {'min s':>7} {'cpu s':>7} {'time/hf':>8} {'cpu/hf':>7} {'mem/hf':>7}"
    )
    for res in results.values():
        print(
            f"{res['side']:<{width}} {res['loss']:>8.4f} {res['baseline_rss_mib']:>13.0f} {res['peak_mib']:>15.1f} "
            f"{res['peak_steady_mib']:>18.1f} {res['median_s']:>7.3f} {res['min_s']:>7.3f} "
            f"{res['median_cpu_s']:>7.3f} {time_ratio_of(res, hf):>8.3f} {time_ratio_of(res, hf, 'cpu_s'):>7.3f} "
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
        if name in ("hf", "ours"):
            continue
        v = variants[name] = {
            "time_vs_ours": time_ratio_of(res, ours),
            "cpu_time_vs_ours": time_ratio_of(res, ours, "cpu_s"),
            "memory_vs_ours": ratio(res, ours, "peak_mib"),
            "memory_steady_vs_ours": ratio(res, ours, "peak_steady_mib"),
            "time_vs_hf": time_ratio_of(res, hf),
            "memory_vs_hf": ratio(res, hf, "peak_mib"),
        }
        print(
            f"variant {name}: vs ours: time {v['time_vs_ours']:.4f} (cpu {v['cpu_time_vs_ours']:.4f}), memory "
            f"{v['memory_vs_ours']:.4f} (steady {v['memory_steady_vs_ours']:.4f}); vs hf: time {v['time_vs_hf']:.4f}, "
            f"memory {v['memory_vs_hf']:.4f}"
        )
    print(
        f"memory ratio ours/hf: {mem_ratio:.4f} (hf/ours {1 / mem_ratio:.2f}x; target <= {MEMORY_TARGET:.3f}) "
        f"{verdict(mem_ratio, MEMORY_TARGET)}"
    )
    print(
        f"  steady-state step:  {steady_ratio:.4f} (hf/ours {1 / steady_ratio:.2f}x) {verdict(steady_ratio, MEMORY_TARGET)}"
    )
    how = f"median of {len(passes)} interleaved passes" if passes else "per-side subprocesses"
    print(
        f"time ratio ours/hf:   {time_ratio:.4f} (hf/ours {1 / time_ratio:.2f}x; target <= {TIME_TARGET:.3f}; {how}) "
        f"{verdict(time_ratio, TIME_TARGET)}"
    )
    print(f"  CPU time (all threads): {cpu_ratio:.4f}; per-side subprocesses (cross-check): {isolated_ratio:.4f}")
    for res in results.values():
        if res["profile"]:
            print(f"\nprofile of one {res['side']} step (torch.profiler, CPU, top ops by self time):")
            print(res["profile"])

    if args.json is not None:
        result = {
            "config": {k: v for k, v in vars(args).items() if k not in ("side", "json", "patches", "paired")},
            "hf": hf,
            "ours": ours,
            "variants": {name: {**results[name], **v} for name, v in variants.items()},
            "paired_passes": passes,
            "memory_ratio": mem_ratio,
            "memory_ratio_steady": steady_ratio,
            "time_ratio": time_ratio,
            "time_ratio_method": how,
            "cpu_time_ratio": cpu_ratio,
            "isolated_time_ratio": isolated_ratio,
            "memory_target": MEMORY_TARGET,
            "time_target": TIME_TARGET,
            "memory_pass": mem_ratio <= MEMORY_TARGET,
            "memory_steady_pass": steady_ratio <= MEMORY_TARGET,
            "time_pass": time_ratio <= TIME_TARGET,
        }
        with open(args.json, "w") as fh:
            json.dump(nan_to_none(result), fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
