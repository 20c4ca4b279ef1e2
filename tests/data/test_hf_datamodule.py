"""HFDataModule: Hugging Face datasets in the three conversation shapes, map-style and streaming, mixtures, exact
once per epoch across ranks and workers, resume, grouping and packing through bounded buffers."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_mm import MultimodalModule
from lightning_mm.data import BadSampleError, HFDataModule, LlavaDataset
from lightning_mm.data.conversations import detect_schema
from lightning_mm.data.mixture import mixture_items
from lightning_mm.data.sources import HFSource
from tests.data.hf_rows import LLAVA_DIR, _parts, cauldron_fits, dataset, llava_records, numbered

TOKENIZER = str(LLAVA_DIR.parent / "tokenizer")
HF_WORKER = Path(__file__).with_name("hf_resume_worker.py")


@pytest.fixture(scope="module")
def contract():
    module = MultimodalModule(model="tiny", model_overrides={"tokenizer": TOKENIZER, "template": "vicuna_v1"})
    return module.data_contract


def _write(ds: datasets.Dataset, tmp_path, kind: str, name: str = "data") -> str:
    if kind == "disk":
        ds.save_to_disk(str(tmp_path / name))
        return str(tmp_path / name)
    ds.to_parquet(str(tmp_path / f"{name}.parquet"))
    return str(tmp_path / f"{name}.parquet")


def _dm(contract, train, **kwargs) -> HFDataModule:
    kwargs.setdefault("template", "vicuna_v1")
    kwargs.setdefault("batch_size", 2)
    dm = HFDataModule(train=train, **kwargs)
    dm.bind(contract)
    return dm


def _ids(loader) -> list[list[str]]:
    """The ids of each batch (of each packed row's samples, in row order)."""
    return [[str(i) for x in b["id"] for i in (x if isinstance(x, list) else [x])] for b in loader]


# ---------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(("shape", "kind"), [("llava", "parquet"), ("messages", "disk"), ("cauldron", "parquet")])
def test_each_shape_gives_the_samples_of_the_llava_json(shape, kind, contract, tmp_path):
    records = _fitting(shape)
    path = _write(dataset(shape, records), tmp_path, kind)
    dm = _dm(contract, path, group_by_length=False)
    plans = dm.plan_loader("train", shuffle=False, batch_size=1).dataset
    reference = LlavaDataset(
        str(LLAVA_DIR / "llava_tiny.json"),
        str(LLAVA_DIR),
        contract.tokenizer,
        "vicuna_v1",
        None,
        layout=contract.layout,
    )
    by_id = {str(reference.record_id(i)): reference[i] for i in range(len(reference))}
    assert len(records) >= 4
    for k, record in enumerate(records):
        got, want = plans.sample((0, k, None)), by_id[str(record["id"])]
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["labels"], want["labels"])
        assert (got["pixel_values"] is None) == (want["pixel_values"] is None)
        if want["pixel_values"] is not None:
            assert torch.equal(got["pixel_values"], want["pixel_values"])  # bytes decoded as the files are


def _v(text: str) -> list[str]:
    return [p["text"] if p["type"] == "text" else "<image>" for p in _parts(text)]


def test_a_source_of_no_known_shape_names_its_columns(tmp_path):
    path = _write(datasets.Dataset.from_dict({"id": ["a"], "prompt": ["hi"]}), tmp_path, "parquet")
    with pytest.raises(ValueError, match=r"no conversation column; found columns \['id', 'prompt'\]"):
        HFSource(path)
    with pytest.raises(ValueError, match="schema 'messages' needs a 'messages' column"):
        detect_schema(["conversations"], "x", "messages")


def test_a_bad_row_is_named_by_source_shard_and_row_and_skipped_once(contract, tmp_path):
    ds = numbered(6)
    bad = ds.to_dict()
    bad["messages"][3] = [{"role": "assistant", "content": [{"type": "text", "text": "no question"}]}]
    path = _write(datasets.Dataset.from_dict(bad, features=ds.features), tmp_path, "parquet")
    dm = _dm(contract, path, streaming=True, group_by_length=False)
    with pytest.raises(BadSampleError, match=r"data\.parquet.*: shard 0 row 3: record 'r3'.*turns must be"):
        list(dm.train_dataloader())
    dm = _dm(contract, path, streaming=True, group_by_length=False, on_bad_sample="skip")
    batches = list(dm.train_dataloader())
    skipped = Counter(r for b in batches for r in b["skipped"])
    assert skipped == {"bad_turn_order": 1} and sorted(i for b in batches for i in b["id"]) == [
        "r0",
        "r1",
        "r2",
        "r4",
        "r5",
    ]


# ---------------------------------------------------------------------------------------------------- exact once
@pytest.mark.parametrize("streaming", [False, True])
def test_every_record_once_per_epoch_over_two_ranks_and_two_workers(streaming, contract, tmp_path):
    path = _write(numbered(37), tmp_path, "disk")
    seen: list[str] = []
    steps = []
    for rank in range(2):
        dm = _dm(contract, {"path": path, "num_shards": 4}, streaming=streaming, num_workers=2, buffer_batches=3)
        dm._rank = lambda rank=rank: (rank, 2)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        ids = _ids(loader)
        steps.append(len(ids))
        seen += [i for b in ids for i in b]
    assert steps[0] == steps[1] == 10  # 37 records in global batches of 2 x 2: every rank takes the same steps
    assert sorted(seen) == sorted(f"r{i}" for i in range(37))  # each exactly once, none repeated to even out


def test_mixture_follows_its_weights_and_seed(tmp_path):
    a, b = (HFSource(_write(numbered(n), tmp_path, "disk", name)) for n, name in ((50, "a"), (30, "b")))
    draw = [s for s, _, _ in mixture_items([a, b], seed=4, epoch=0, weights=[3, 1], num_samples=4000)]
    n_a = draw.count(0)
    assert abs(n_a - 3000) <= 3 * np.sqrt(4000 * 0.75 * 0.25)  # binomial: within 3 standard deviations
    assert [i for i in mixture_items([a, b], 4, 0, weights=[3, 1], num_samples=4000)] == [
        i for i in mixture_items([a, b], 4, 0, weights=[3, 1], num_samples=4000)
    ]
    assert draw != [s for s, _, _ in mixture_items([a, b], seed=5, epoch=0, weights=[3, 1], num_samples=4000)]
    counted = Counter((s, k) for s, k, _ in mixture_items([a, b], 0, 0, counts=[50, 60]))
    assert sum(n for (s, _), n in counted.items() if s == 0) == 50 and len([k for k in counted if k[0] == 0]) == 50
    assert sum(n for (s, _), n in counted.items() if s == 1) == 60  # a second pass over b for the last 30


# ---------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("packing", [False, True])
def test_streaming_loader_resumes_with_the_next_batches(packing, contract, tmp_path):  # workers: the kill -9 tests
    path = _write(numbered(30), tmp_path, "parquet")

    def make():
        return _dm(
            contract,
            path,
            streaming=True,
            shuffle_buffer=8,
            buffer_batches=2,
            packing=packing,
            max_length=256,
        ).train_dataloader()

    full = make()
    full.sampler.set_epoch(2)
    reference = _ids(full)
    loader = make()
    loader.sampler.set_epoch(2)
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    loader.taken = lambda: 2  # a consumer that reads one batch ahead (Lightning, when a loader has no length)
    assert loader.state_dict() == {"epoch": 2, "batches": 2}
    resumed = make()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    assert _ids(resumed) == reference[3:]
    assert sorted(i for b in reference for i in b) == sorted(f"r{i}" for i in range(30))


def test_packing_and_grouping_on_a_stream_go_through_a_bounded_buffer(contract, tmp_path):
    path = _write(numbered(40), tmp_path, "parquet")
    packed = _dm(contract, path, streaming=True, packing=True, max_length=256, buffer_batches=2).train_dataloader()
    batches = list(packed)
    ids = [i for b in batches for row in b["id"] for i in row]
    assert sorted(ids) == sorted(f"r{i}" for i in range(40))  # every record once, two or so per row
    assert all(b["input_ids"].shape[1] <= 256 and "position_ids" in b for b in batches) and len(batches) < 20
    grouped = _dm(contract, path, streaming=True, batch_size=4, buffer_batches=5, shuffle_buffer=4).train_dataloader()
    plain = _dm(contract, path, streaming=True, batch_size=4, group_by_length=False).train_dataloader()

    def spread(loader) -> int:  # summed (longest - shortest) of the batches
        return sum(int(b["attention_mask"].sum(1).max() - b["attention_mask"].sum(1).min()) for b in loader)

    assert spread(grouped) < spread(plain)  # similar lengths batched together


# ---------------------------------------------------------------------------------------------------- a run
def _fitting(shape: str) -> list[dict]:
    """The asset records that ``shape`` holds: the_cauldron's shape has no system turn and puts images first, and
    placeholders inside a sentence do not round-trip through content parts."""
    records = llava_records()
    if shape == "cauldron":
        return [r for r in records if cauldron_fits(r)]
    if shape == "messages":
        return [r for r in records if all("\n".join(_v(t["value"])) == t["value"] for t in r["conversations"])]
    return records


class _StepIds(L.Callback):
    def __init__(self) -> None:
        self.ids: list[list[str]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ids.append([str(i) for i in batch["id"]])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "kind", "val_shape", "val_kind"),
    [("messages", "disk", "llava", "parquet"), ("llava", "parquet", "cauldron", "disk"),
     ("cauldron", "disk", "messages", "parquet")],
)  # fmt: skip
def test_fit_validate_with_generation_predict_and_resume_on_each_shape(
    shape, kind, val_shape, val_kind, contract, tmp_path, quiet_trainer
):
    train = _write(dataset(shape, _fitting(shape)), tmp_path, kind, "train")
    val = _write(dataset(val_shape, _fitting(val_shape)), tmp_path, val_kind, "val")

    def dm() -> HFDataModule:
        return HFDataModule(train=train, val=val, template="vicuna_v1", batch_size=2, val_batch_size=4)

    torch.manual_seed(0)
    overrides = {"tokenizer": TOKENIZER, "template": "vicuna_v1"}
    m = MultimodalModule(model="tiny", model_overrides=overrides, eval_generate=True, max_new_tokens=2)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=2)
    run = {"limit_val_batches": 1, "num_sanity_val_steps": 0, "val_check_interval": 2, "enable_checkpointing": True}
    trainer = quiet_trainer(max_steps=2, callbacks=[ckpt], **run)
    trainer.fit(m, dm())
    assert trainer.global_step == 2 and "val/loss" in trainer.callback_metrics
    rows = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_predict_batches=1).predict(
        m, dm()
    )
    assert sum(len(r) if isinstance(r, list) else 1 for r in rows) >= 1
    step_ids = _StepIds()
    resumed = quiet_trainer(max_steps=3, callbacks=[step_ids], limit_val_batches=0)
    resumed.fit(m, dm(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))  # its weights and data position
    reference = _dm(contract, train).train_dataloader()
    batches = []
    for epoch in (0, 1):
        reference.sampler.set_epoch(epoch)
        batches += _ids(reference)
    assert resumed.global_step == 3 and step_ids.ids == [batches[2]]  # the third batch of the uninterrupted order


# ---------------------------------------------------------------------------------------------------- kill -9
def _stream_data(out: Path, n: int = 16) -> list[str]:
    """``n`` numbered records as 2 Parquet files (``out/data``, 2 shards when streamed) and a ``save_to_disk`` copy."""
    ds = numbered(n)
    (out / "data").mkdir(parents=True)
    for k in range(2):
        ds.shard(2, k, contiguous=True).to_parquet(str(out / "data" / f"part-{k}.parquet"))
    ds.save_to_disk(str(out / "disk"))
    return [f"r{i}" for i in range(n)]


def _steps(out: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (out / f"steps-{rank}.jsonl").read_text().splitlines()]


def _kill_and_resume(launch_worker, run: Path, steps: int, kill_at: int, *more: str) -> None:
    """The killed run, then its resumed run (and what ``more`` asks of that launch: ``--ddp``, ``--reference``)."""
    args = (str(run), "--steps", str(steps))
    ddp = ("--ddp",) if "--ddp" in more else ()
    launch_worker(*args, *ddp, "--kill-at", str(kill_at), killed=True, script=HF_WORKER, out_dir=str(run))
    assert len(_steps(run)) == kill_at
    launch_worker(*args, *more, "--resume", str(run / "ckpt" / "last.ckpt"), script=HF_WORKER, out_dir=str(run))


def _assert_bit_identical(reference: Path, resumed: Path, steps: int, ranks: int = 1) -> None:
    for rank in range(ranks):
        ref, got = _steps(reference, rank), _steps(resumed, rank)
        assert [r["step"] for r in got] == list(range(1, steps + 1))  # the killed run's steps, then the resumed ones
        assert [r["ids"] for r in got] == [r["ids"] for r in ref]  # the same batches, in the same order
        assert [r["loss"] for r in got] == [r["loss"] for r in ref]  # bit-identical losses


@pytest.mark.slow
def test_killed_streaming_run_with_two_workers_resumes_bit_identical(tmp_path, launch_worker):
    # 16 streamed records, 2 a step: 8 steps an epoch. Killed at step 3, resumed into the second epoch.
    run, reference = tmp_path / "killed", tmp_path / "uninterrupted"
    _stream_data(run)
    _stream_data(reference)
    _kill_and_resume(launch_worker, run, 10, 3)
    spec = importlib.util.spec_from_file_location("lightning_mm_hf_resume_worker", HF_WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched runs
    try:
        worker.run(reference, 10)
    finally:
        torch.set_num_threads(threads)
    _assert_bit_identical(reference, run, 10)
    epoch = [i for r in _steps(reference)[:8] for i in r["ids"]]
    assert sorted(epoch) == sorted(f"r{i}" for i in range(16))


@pytest.mark.distributed
def test_two_ranks_two_workers_each_record_once_and_a_killed_run_resumes_bit_identical(tmp_path, launch_worker):
    # 2 gloo processes x 2 records x 2 workers each: 4 steps an epoch. Killed after step 2, resumed to step 6; the
    # uninterrupted run follows in the processes of the resumed one.
    run, reference = tmp_path / "killed", tmp_path / "uninterrupted"
    _stream_data(run)
    records = _stream_data(reference)
    _kill_and_resume(launch_worker, run, 6, 2, "--ddp", "--reference", str(reference), "--read-map")
    _assert_bit_identical(reference, run, 6, ranks=2)
    streamed = [i for rank in range(2) for r in _steps(reference, rank)[:4] for i in r["ids"]]
    assert sorted(streamed) == sorted(records)  # the first epoch: each record once, over both ranks
    mapped = [json.loads((reference / f"map-{rank}.json").read_text()) for rank in range(2)]
    assert len(mapped[0]) == len(mapped[1]) == 4
    assert sorted(i for ids in mapped for b in ids for i in b) == sorted(records)  # map-style too
