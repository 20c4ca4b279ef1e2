"""Is the data loader ever the bottleneck? LLaVA-format loading vs the quickstart training step.

Measures, in the same run:
  * loader: samples/s of ``LlavaDataModule`` (LlavaDataset + length-grouped sampler + collate, ``--workers`` worker
    processes, batch 32) on the committed LLaVA-format assets (tests/assets/llava), images decoded and resized by timm
    and sent to the model as uint8;
  * consumer: samples/s that the quickstart model (``tiny``, batch 32) trains at: forward + loss + backward + AdamW.

Prints the ratio loader / consumer (target >= 5: the loader must never be the bottleneck), and for information the
single-process loader rate (``num_workers=0``) and its cost per sample by stage.

The 8 committed records are written over and over to a temporary LLaVA-format file of ``--records`` records (each
copy with its own id and text, the same image files), so that an epoch holds many batches of 32 as with a real
dataset. Every sample is still read, decoded, resized, tokenized and collated each time it is loaded; nothing is
cached across samples beyond what the library does for any dataset. With the 8 records alone (``--records 8``) every
epoch is one batch of 8 samples: the rate then measures the DataLoader's per-epoch restart, where only one worker can
be busy, more than loading.

Usage:
    python benchmarks/data.py                 # full measurement
    python benchmarks/data.py --tiny          # CI smoke: a few batches only
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _harness import apply_tiny, benchmark_parser, write_json

from lightning_mm import MultimodalModule
from lightning_mm.data import ImageProcessor, LlavaDataModule, SyntheticVQADataModule

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
RECORDS = ASSETS / "llava" / "llava_tiny.json"


def write_records(path: Path, n: int) -> Path:
    """Write the committed LLaVA records over and over until ``n`` records, to ``path``.

    Each copy gets its own id and its own text (every turn ends in the copy's number), so that the tokenizer sees new
    text as in a real dataset, not the repeats that the library's cache of short text pieces would answer.
    """
    records = json.loads(RECORDS.read_text())
    out = []
    for k in range(n):
        r, copy = records[k % len(records)], k // len(records)
        turns = [{**t, "value": f"{t['value']} {copy}"} for t in r["conversations"]]
        out.append({**r, "id": f"{r.get('id', k % len(records))}-{copy}", "conversations": turns})
    path.write_text(json.dumps(out))
    return path


def _datamodule(data_path: Path, workers: int, batch_size: int):
    module = MultimodalModule(
        model="tiny", model_overrides={"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"}
    )
    dm = LlavaDataModule(
        train_path=str(data_path),
        image_folder=str(ASSETS / "llava"),
        template="vicuna_v1",
        max_length=256,
        batch_size=batch_size,
        num_workers=workers,
    )
    dm.bind(module.data_contract)
    dm.setup("fit")
    return dm


def loader_rate(samples: int, workers: int, batch_size: int, data_path: Path = RECORDS) -> float:
    """Samples/s of the LLaVA-format loader, after its workers have started."""
    loader = _datamodule(data_path, workers, batch_size).train_dataloader()
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


def stage_split(samples: int, batch_size: int, data_path: Path) -> dict[str, float]:
    """Single-process cost per sample (microseconds) of each stage of ``LlavaDataset.__getitem__`` and the collate."""
    dm = _datamodule(data_path, 0, batch_size)
    ds = dm.train_dataset
    collate = dm.train_dataloader().collate_fn
    idx = [k % len(ds) for k in range(samples)]
    records = [ds.record(i) for i in idx]

    def timed(fn) -> float:  # results are dropped as they come: no pile of live samples for the GC to walk
        start = time.perf_counter()
        for i, rec in zip(idx, records, strict=True):
            fn(i, rec)
        return (time.perf_counter() - start) / samples * 1e6

    split = {
        "record": timed(lambda i, rec: ds.record(i)),
        "template+tokenize": timed(lambda i, rec: ds.encode(rec["messages"])),
        "image open+decode": timed(lambda i, rec: [ImageProcessor.load(p) for p in rec["images"]]),
        "image transform": timed(lambda i, rec: rec["images"] and ds.layout.processor.load_many(rec["images"])),
        "__getitem__ total": timed(lambda i, rec: ds[i]),
    }
    split["image transform"] -= split["image open+decode"]  # load_many = open+decode + transform + stack
    items = [ds[i] for i in idx]
    start = time.perf_counter()
    for k in range(0, samples, batch_size):
        collate(items[k : k + batch_size])
    split["collate"] = (time.perf_counter() - start) / samples * 1e6
    return split


def consumer_rate(steps: int, batch_size: int, repeats: int) -> float:
    """Samples/s the quickstart model trains at (median over repeats)."""

    torch.manual_seed(0)
    module = MultimodalModule(model="tiny")
    module.configure_model()
    dm = SyntheticVQADataModule(train_samples=batch_size * 4, batch_size=batch_size, train_questions_per_image=3)
    dm.bind(module.data_contract)
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
    parser = benchmark_parser(__doc__, compute=False)
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes")
    parser.add_argument("--loader-samples", type=int, default=2000)
    parser.add_argument(
        "--records", type=int, default=4096, help="records in the data file (the 8 committed ones, repeated)"
    )
    parser.add_argument("--steps", type=int, default=30, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = apply_tiny(parser.parse_args(), {"loader_samples": 64, "steps": 2, "repeats": 1})
    if args.tiny:
        args.records = min(args.records, 128)
    batch = 32
    train = consumer_rate(args.steps, batch_size=batch, repeats=args.repeats)  # first: no loader workers alive yet
    with tempfile.TemporaryDirectory() as tmp:
        data_path = write_records(Path(tmp) / "llava_repeated.json", args.records)
        load = loader_rate(args.loader_samples, args.workers, batch_size=batch, data_path=data_path)
        single = loader_rate(args.loader_samples, 0, batch_size=batch, data_path=data_path)
        split = stage_split(min(args.loader_samples, 2000), batch, data_path)
    ratio = load / train
    where = f"tests/assets/llava x{args.records / 8:g} = {args.records} records"
    print(f"loader   {load:9.1f} samples/s  (LlavaDataModule, {args.workers} workers, batch {batch}, {where})")
    print(f"loader   {single:9.1f} samples/s  (same, single process: num_workers=0)")
    print(f"training {train:9.1f} samples/s  (quickstart model, batch {batch}, forward+backward+AdamW)")
    print("single-process cost per sample, us: " + ", ".join(f"{k} {v:.0f}" for k, v in split.items()))
    print(f"loader/training ratio: {ratio:.2f} (target >= 5: {'PASS' if ratio >= 5 else 'MISS'})")
    result = {"loader_sps": load, "loader_sps_single_process": single, "train_sps": train, "ratio": ratio}
    write_json(args.json, {**result, "records": args.records, "workers": args.workers, "split_us_per_sample": split})


if __name__ == "__main__":
    main()
