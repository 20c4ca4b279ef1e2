"""Is the data loader ever the bottleneck? LLaVA-format and streamed Parquet loading vs the quickstart training step.

Measures, in the same run:
  * loader: samples/s of ``LlavaDataModule`` (LlavaDataset + length-grouped sampler + collate, ``--workers`` worker
    processes, batch 32) on the committed LLaVA-format assets (tests/assets/llava), images decoded and resized by timm
    and sent to the model as uint8;
  * stream: samples/s of ``HFDataModule`` streaming the same records from Parquet files (``llava`` shape, images
    embedded as bytes; shards in a seeded order, a shuffle buffer, length grouping through a bounded buffer), same
    workers and batch;
  * consumer: samples/s that the quickstart model (``tiny``, batch 32) trains at: forward + loss + backward + AdamW;
  * stream memory: the streaming loader's resident memory (PSS of its process and its workers, above what the
    process held before the source was opened; the peak over ``--memory-batches`` batches) on ``--memory-records``
    records and on 10 times as many, each in its own process. Each record there carries its own random-noise PNG of
    ``--memory-image-px`` pixels a side (about 3 bytes a pixel: a real volume of data per record), in the Parquet
    layout of ``--memory-layout``: ``many-files`` (files of 500 records, row groups of 100: 10 times the data is 10
    times the files, as a hub dataset grows in shards), ``large-files`` (8 files whatever the size, row groups of 100)
    or ``large-row-groups`` (8 files, one row group each: 10 times the data is 10 times larger files and row groups).

Prints the ratios loader / consumer and stream / consumer (target >= 5: the loader must never be the bottleneck), the
memory growth ratio (target <= 1.2 when the data grows 10x: streaming memory is bounded by the buffers, not the data),
and for information the single-process loader rate (``num_workers=0``) and its cost per sample by stage.

The 8 committed records are written over and over to a temporary LLaVA-format file of ``--records`` records (each
copy with its own id and text, the same image files), so that an epoch holds many batches of 32 as with a real
dataset. Every sample is still read, decoded, resized, tokenized and collated each time it is loaded; nothing is
cached across samples beyond what the library does for any dataset. With the 8 records alone (``--records 8``) every
epoch is one batch of 8 samples: the rate then measures the DataLoader's per-epoch restart, where only one worker can
be busy, more than loading.

Usage:
    python benchmarks/data.py                 # full measurement
    python benchmarks/data.py --tiny          # CI smoke: a few batches only
    python benchmarks/data.py --memory-only --memory-layout large-row-groups   # the memory runs only, few large files
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from _harness import apply_tiny, benchmark_parser, child_args, child_payload, run_child, verdict, write_json
from _memory import malloc_trim
from PIL import Image

from lightning_mm import MultimodalModule
from lightning_mm.data import HFDataModule, ImageProcessor, LlavaDataModule, SyntheticVQADataModule

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
RECORDS = ASSETS / "llava" / "llava_tiny.json"
ROW_GROUP = 100  # rows per Parquet row group (datasets' record batches of image data)
RECORDS_PER_FILE = 500  # records per Parquet file of the memory runs (layout many-files)
LARGE_FILES = 8  # files of the memory runs whatever the size (layouts large-files, large-row-groups)
LAYOUTS = ("many-files", "large-files", "large-row-groups")


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


def _noise_png(rng: np.random.Generator, px: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (px, px, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def write_parquet(folder: Path, n: int, files: int = 4, image_px: int = 0, row_group: int = ROW_GROUP) -> str:
    """The records of :func:`write_records` as ``files`` Parquet files in the ``llava`` shape, images as bytes.

    With ``image_px``, every image is a random-noise PNG of its own, ``image_px`` pixels a side. Row groups hold
    ``row_group`` rows, whatever the number of records (0: one row group per file). Returns the files' glob.
    """
    records = json.loads(RECORDS.read_text())
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")}),
            "images": datasets.List(datasets.Image()),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    per_file = math.ceil(n / files)
    for f in range(files):
        rows: dict[str, list] = {"id": [], "conversations": [], "images": []}
        for k in range(f * per_file, min(n, (f + 1) * per_file)):
            r, copy = records[k % len(records)], k // len(records)
            image = r.get("image")
            paths = [] if image is None else [image] if isinstance(image, str) else image
            rows["id"].append(f"{r.get('id', k % len(records))}-{copy}")
            rows["conversations"].append([{**t, "value": f"{t['value']} {copy}"} for t in r["conversations"]])
            rows["images"].append(
                [
                    {"bytes": _noise_png(rng, image_px) if image_px else (ASSETS / "llava" / p).read_bytes()}
                    for p in paths
                ]
            )
        part = datasets.Dataset.from_dict(rows, features=features)
        part.to_parquet(str(folder / f"part-{f:03d}.parquet"), batch_size=row_group or max(1, len(part)))
    return str(folder / "*.parquet")


def _contract():
    module = MultimodalModule(
        model="tiny", model_overrides={"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"}
    )
    return module.data_contract


def _stream_datamodule(glob: str, workers: int, batch_size: int, **kwargs) -> HFDataModule:
    dm = HFDataModule(
        train=glob,
        streaming=True,
        template="vicuna_v1",
        max_length=256,
        batch_size=batch_size,
        num_workers=workers,
        **kwargs,
    )
    dm.bind(_contract())
    return dm


def _datamodule(data_path: Path, workers: int, batch_size: int):
    dm = LlavaDataModule(
        train_path=str(data_path),
        image_folder=str(ASSETS / "llava"),
        template="vicuna_v1",
        max_length=256,
        batch_size=batch_size,
        num_workers=workers,
    )
    dm.bind(_contract())
    dm.setup("fit")
    return dm


def loader_rate(samples: int, workers: int, batch_size: int, data_path: Path = RECORDS, glob: str = "") -> float:
    """Samples/s of the LLaVA-format loader (of the streaming one, with the Parquet ``glob``), after its first batch."""
    if glob:
        dm = _stream_datamodule(glob, workers, batch_size)
        dm.setup("fit")
        loader = dm.train_dataloader()
    else:
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


def _pss_mib(pid: int) -> float:
    """Proportional set size of process ``pid`` and its descendants, MiB (shared pages split among their users)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            total += sum(int(line.split()[1]) for line in fh if line.startswith("Pss:")) / 1024
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except (OSError, ValueError):  # a worker that ended meanwhile
        return total
    return total + sum(_pss_mib(c) for c in children)


def _hwm_mib() -> float:
    """This process's peak resident memory so far (``VmHWM``), MiB: it also catches a transient peak between samples."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def stream_memory(glob: str, workers: int, batch_size: int, batches: int) -> dict[str, float]:
    """Peak PSS of the streaming loader's processes over ``batches`` batches, above this process before the source
    is opened (buffers of a few hundred rows: the smaller dataset is still read a small part at a time); and the
    growth of the main process's peak RSS (``VmHWM``), where the rows are read: a transient row-group buffer shows
    there even when it is freed before the next PSS sample."""
    dm = _stream_datamodule(glob, workers, batch_size, shuffle_buffer=256, buffer_batches=8)
    malloc_trim()
    base, hwm = _pss_mib(os.getpid()), _hwm_mib()
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    peak = 0.0
    for _ in range(batches):
        next(it)
        peak = max(peak, _pss_mib(os.getpid()))
    return {"peak_mib": peak - base, "base_mib": base, "main_hwm_growth_mib": _hwm_mib() - hwm}


def _child(args) -> None:
    args = child_args(args)
    print(json.dumps(stream_memory(args.glob, args.workers, 32, args.memory_batches)))


def measure_memory_growth(args, tmp: Path) -> dict[str, dict[str, float]]:
    """:func:`stream_memory` on ``--memory-records`` records and on 10 times as many, each in a fresh process (in
    this one with ``--tiny``, which only shows that the code runs)."""
    out = {}
    for n in (args.memory_records, 10 * args.memory_records):
        if args.memory_layout == "many-files":  # the data grows in files of one size, as a hub dataset's shards do
            files, row_group = math.ceil(n / RECORDS_PER_FILE), ROW_GROUP
        else:  # the files grow with the data
            files, row_group = LARGE_FILES, ROW_GROUP if args.memory_layout == "large-files" else 0
        glob = write_parquet(tmp / f"noise-{n}", n, files=files, image_px=args.memory_image_px, row_group=row_group)
        if args.tiny:
            out[str(n)] = stream_memory(glob, args.workers, 32, args.memory_batches)
        else:
            out[str(n)] = run_child(__file__, child_payload(args, glob=glob), threads=1)
    return out


def _memory_setting(args) -> dict[str, object]:
    return {"memory_layout": args.memory_layout, "memory_records": args.memory_records}


def _print_memory(args, memory: dict[str, dict[str, float]]) -> float:
    """Print the memory runs and their growth ratio; return the ratio."""
    small, large = (memory[str(n)]["peak_mib"] for n in (args.memory_records, 10 * args.memory_records))
    growth = large / small if small > 0 else float("nan")
    print(
        f"stream memory: {small:.1f} MiB at {args.memory_records} records, {large:.1f} MiB at "
        f"{10 * args.memory_records} (PSS of the loader's processes above the baseline, peak over "
        f"{args.memory_batches} batches; {args.memory_image_px} px noise images; layout {args.memory_layout})"
    )
    hwm = [
        memory[str(n)].get("main_hwm_growth_mib", float("nan")) for n in (args.memory_records, 10 * args.memory_records)
    ]
    print(f"main process peak RSS growth (VmHWM): {hwm[0]:.1f} MiB at {args.memory_records} records, {hwm[1]:.1f} MiB")
    print(f"stream memory growth ratio (10x records): {growth:.2f} (target <= 1.2: {verdict(growth, 1.2)})")
    return growth


def main() -> None:
    parser = benchmark_parser(__doc__, compute=False)
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes")
    parser.add_argument("--loader-samples", type=int, default=2000)
    parser.add_argument(
        "--records", type=int, default=4096, help="records in the data file (the 8 committed ones, repeated)"
    )
    parser.add_argument("--steps", type=int, default=30, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-records", type=int, default=4000, help="records of the smaller memory run")
    parser.add_argument("--memory-batches", type=int, default=100, help="batches read in each memory run")
    parser.add_argument("--memory-image-px", type=int, default=48, help="side of each memory-run image")
    parser.add_argument(
        "--memory-layout", choices=LAYOUTS, default="many-files", help="Parquet files of the memory runs"
    )
    parser.add_argument("--memory-only", action="store_true", help="only the memory runs (no rates)")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    if args.child:
        _child(args)
        return
    args = apply_tiny(args, {"loader_samples": 64, "steps": 2, "repeats": 1, "memory_records": 64, "memory_batches": 2})
    if args.tiny:
        args.records = min(args.records, 128)
        args.memory_image_px = 8
    batch = 32
    if args.memory_only:
        with tempfile.TemporaryDirectory() as tmp:
            memory = measure_memory_growth(args, Path(tmp))
        growth = _print_memory(args, memory)
        write_json(args.json, {"stream_memory_mib": memory, "stream_memory_growth": growth, **_memory_setting(args)})
        return
    train = consumer_rate(args.steps, batch_size=batch, repeats=args.repeats)  # first: no loader workers alive yet
    with tempfile.TemporaryDirectory() as tmp:
        data_path = write_records(Path(tmp) / "llava_repeated.json", args.records)
        glob = write_parquet(Path(tmp) / "parquet", args.records)
        load = loader_rate(args.loader_samples, args.workers, batch_size=batch, data_path=data_path)
        stream = loader_rate(args.loader_samples, args.workers, batch_size=batch, glob=glob)
        single = loader_rate(args.loader_samples, 0, batch_size=batch, data_path=data_path)
        split = stage_split(min(args.loader_samples, 2000), batch, data_path)
        memory = measure_memory_growth(args, Path(tmp))
    ratio, stream_ratio = load / train, stream / train
    where = f"tests/assets/llava x{args.records / 8:g} = {args.records} records"
    print(f"loader   {load:9.1f} samples/s  (LlavaDataModule, {args.workers} workers, batch {batch}, {where})")
    print(f"stream   {stream:9.1f} samples/s  (HFDataModule streaming 4 Parquet files of the same records, same)")
    print(f"loader   {single:9.1f} samples/s  (LlavaDataModule, single process: num_workers=0)")
    print(f"training {train:9.1f} samples/s  (quickstart model, batch {batch}, forward+backward+AdamW)")
    print("single-process cost per sample, us: " + ", ".join(f"{k} {v:.0f}" for k, v in split.items()))
    print(f"loader/training ratio: {ratio:.2f} (target >= 5: {verdict(ratio, 5, higher_is_better=True)})")
    print(f"stream/training ratio: {stream_ratio:.2f} (target >= 5: {verdict(stream_ratio, 5, higher_is_better=True)})")
    growth = _print_memory(args, memory)
    result = {
        "loader_sps": load,
        "stream_sps": stream,
        "loader_sps_single_process": single,
        "train_sps": train,
        "ratio": ratio,
        "stream_ratio": stream_ratio,
        "stream_memory_mib": memory,
        "stream_memory_growth": growth,
    }
    setting = {"records": args.records, "workers": args.workers, "split_us_per_sample": split, **_memory_setting(args)}
    write_json(args.json, {**result, **setting})


if __name__ == "__main__":
    main()
