"""Does a QLoRA run still learn? Held-out accuracy of an NF4 LLM beside a bf16-frozen one, same run otherwise.

Both sides train the ``tiny`` model on the colour questions of the built-in synthetic task (six colours: chance 1/6)
under ``bf16-mixed``: tower and projector trained fully, LoRA r 16 / alpha 32 on the LLM, whose frozen base is stored
in bf16 on one side and in NF4 (bitsandbytes ``Linear4bit``, compute bf16) on the other; AdamW lr 1e-3, the same seed
and batches. It measures learning, not speed: the wall time of each fit is printed for the record only.

Usage:
    python benchmarks/qlora_learns.py               # 200 steps of 32 per side (several minutes a side on 2 cores)
    python benchmarks/qlora_learns.py --tiny        # CI smoke: 2 steps of 4, proves the script runs

Prints the held-out answer accuracy of each side and ``accuracy ratio nf4/bf16``; targets (full size): NF4 accuracy
>= 0.9 and at least the bf16 side's minus 0.1.
"""

from __future__ import annotations

import functools
import time

import lightning as L
import torch
from _harness import benchmark_parser, verdict, write_json

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.placement import Placement, quantized_layers

CHANCE = 1 / 6  # six colours


def fit(quantize: str | None, steps: int, batch_size: int, val_samples: int) -> dict[str, float]:
    """Train one side for ``steps`` steps and return its held-out metrics (plus ``wall_s``)."""
    L.seed_everything(0, verbose=False)
    placements = {
        "vision": Placement("full"),
        "projector": Placement("full"),
        "llm": Placement("lora", r=16, alpha=32.0, quantize=quantize),
    }
    module = MultimodalModule(
        model="tiny", placements=placements, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0)
    )
    data = SyntheticVQADataModule(
        train_samples=batch_size * steps,
        val_samples=val_samples,
        batch_size=batch_size,
        question_types=["color"],
        train_questions_per_image=1,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    wall = time.perf_counter() - start
    if bool(quantized_layers(module.network.llm)) != (quantize is not None):
        raise SystemExit(f"the {quantize or 'bf16'} side's LLM is not stored as asked")
    metrics = trainer.validate(module, data, verbose=False)[0]
    return {"wall_s": round(wall, 1), **{k: float(v) for k, v in metrics.items()}}


def main() -> None:
    parser = benchmark_parser(__doc__, compute=False)
    parser.add_argument("--steps", type=int, default=200, help="training steps per side")
    args = parser.parse_args()
    steps, batch_size, val_samples = (2, 4, 8) if args.tiny else (args.steps, 32, 128)
    results = {}
    for name, quantize in (("bf16", None), ("nf4", "nf4")):
        results[name] = fit(quantize, steps, batch_size, val_samples)
        print(
            f"{name:5s} held-out answer accuracy {results[name]['val/answer_accuracy']:.3f}  "
            f"val loss {results[name]['val/loss']:.3f}  (fit {results[name]['wall_s']:.1f} s, {steps} steps)",
            flush=True,
        )
    nf4, bf16 = results["nf4"]["val/answer_accuracy"], results["bf16"]["val/answer_accuracy"]
    print(f"accuracy ratio nf4/bf16: {nf4 / max(bf16, 1e-9):.3f}  (chance {CHANCE:.3f})")
    if not args.tiny:
        print(f"target nf4 accuracy >= 0.9: {verdict(nf4, 0.9, True)}")
        print(f"target nf4 accuracy >= bf16 - 0.1: {verdict(nf4, bf16 - 0.1, True)}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
