"""Is the data loader ever the bottleneck? LLaVA-format loading vs the quickstart training step.

Measures, in the same run:
  * loader: samples/s of ``LlavaDataModule`` (LlavaDataset + length-grouped sampler + collate, ``--workers`` worker
    processes) on the committed LLaVA-format assets (tests/assets/llava), images decoded and transformed by timm;
  * consumer: samples/s that the quickstart model (``tiny``, batch 32) trains at: forward + loss + backward + AdamW.

Prints the ratio loader / consumer (target >= 5: the loader must never be the bottleneck).

Usage:
    python benchmarks/data.py                 # full measurement
    python benchmarks/data.py --tiny          # CI smoke: a few batches only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"


def loader_rate(samples: int, workers: int, batch_size: int) -> float:
    """Samples/s of the LLaVA-format loader, after its workers have started."""
    from lightning_mm import MultimodalModule
    from lightning_mm.data import LlavaDataModule

    module = MultimodalModule(
        model="tiny", model_overrides={"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"}
    )
    dm = LlavaDataModule(
        train_path=str(ASSETS / "llava" / "llava_tiny.json"),
        template="vicuna_v1",
        image_aspect="pad",
        max_length=256,
        batch_size=batch_size,
        num_workers=workers,
    )
    dm.bind(module.tokenizer, module.num_image_tokens, module.image_data_config, module.image_token_id)
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # workers up, first batch out
    seen, start = 0, time.perf_counter()
    while seen < samples:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += batch["input_ids"].shape[0]
    return seen / (time.perf_counter() - start)


def consumer_rate(steps: int, batch_size: int, repeats: int) -> float:
    """Samples/s the quickstart model trains at (median over repeats)."""
    from lightning_mm import MultimodalModule
    from lightning_mm.data import SyntheticVQADataModule

    torch.manual_seed(0)
    module = MultimodalModule(model="tiny")
    module.configure_model()
    dm = SyntheticVQADataModule(train_samples=batch_size * 4, batch_size=batch_size, train_questions_per_image=3)
    dm.bind(module.tokenizer, module.num_image_tokens, module.image_data_config, module.image_token_id)
    batches = list(dm.train_dataloader())
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)

    def step(batch):
        loss_sum, n = module.compute_loss(module(batch), batch["labels"])
        (loss_sum / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(steps):
            step(batches[k % len(batches)])
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few batches only (CI smoke test)")
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes")
    parser.add_argument("--loader-samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=30, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if args.tiny:
        args.loader_samples, args.steps, args.repeats = 64, 2, 1
    train = consumer_rate(args.steps, batch_size=32, repeats=args.repeats)  # first: no loader workers alive yet
    load = loader_rate(args.loader_samples, args.workers, batch_size=32)
    ratio = load / train
    print(f"loader   {load:9.1f} samples/s  (LlavaDataModule, {args.workers} workers, batch 32, tests/assets/llava)")
    print(f"training {train:9.1f} samples/s  (quickstart model, batch 32, forward+backward+AdamW)")
    print(f"loader/training ratio: {ratio:.2f} (target >= 5: {'PASS' if ratio >= 5 else 'MISS'})")
    if args.json:
        args.json.write_text(json.dumps({"loader_sps": load, "train_sps": train, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
