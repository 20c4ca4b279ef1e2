"""Exact resume: a run killed (SIGKILL) after a mid-epoch checkpoint continues with the exact next batch.

The runs are ``tests/data/resume_worker.py`` in subprocesses; the uninterrupted reference runs in this process where it
can (one process), as a launch of its own under DDP.
"""

from __future__ import annotations

import importlib.util
import json
import time
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from lightning_mm.data import LengthGroupedSampler, ResumableDataLoader, ShuffleSampler

WORKER = Path(__file__).with_name("resume_worker.py")


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _epoch(loader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [b.tolist() for b in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_after_the_batches_it_delivered(workers):
    def make():
        return ResumableDataLoader(_Indices(20), batch_size=3, sampler=ShuffleSampler(20, seed=5), num_workers=workers)

    full = make()
    first, second = _epoch(full, 0), _epoch(full, 1)
    assert first != second and sorted(sum(first, [])) == list(range(20))
    loader = make()
    loader.sampler.set_epoch(1)
    it = iter(loader)
    taken = [next(it).tolist() for _ in range(4)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 4} and taken == second[:4]
    resumed = make()
    resumed.load_state_dict(state)
    assert _epoch(resumed, 1) == second[4:]  # the exact next batch first
    assert resumed.state_dict() == {"epoch": 1, "batches": len(second)}
    assert _epoch(resumed, 2) == _epoch(full, 2)  # the next epoch whole
    other = make()
    other.load_state_dict(state)
    assert _epoch(other, 2) == _epoch(full, 2)  # a state of another epoch skips nothing
    done = make()
    done.load_state_dict({"epoch": 1, "batches": len(second)})  # saved after the last batch of epoch 1
    assert _epoch(done, 1) == second


def test_samplers_state_is_their_seed_and_epoch():
    pairs = [
        (ShuffleSampler(10, seed=2), ShuffleSampler(10)),
        (LengthGroupedSampler(list(range(10)), batch_size=2, seed=2), LengthGroupedSampler(list(range(10)), 2)),
    ]
    for sampler, fresh in pairs:
        sampler.set_epoch(3)
        order = list(sampler)
        state = sampler.state_dict()
        fresh.load_state_dict(state)
        assert state == {"seed": 2, "epoch": 3} and list(fresh) == order


def test_batch_sampler_loader_skips_whole_batches():
    batch_sampler = BatchSampler(ShuffleSampler(10, seed=1), batch_size=4, drop_last=False)
    full = [b.tolist() for b in ResumableDataLoader(_Indices(10), batch_sampler=batch_sampler)]
    resumed = ResumableDataLoader(_Indices(10), batch_sampler=batch_sampler)
    resumed.load_state_dict({"epoch": 0, "batches": 1})
    assert [b.tolist() for b in resumed] == full[1:]
    plain = DataLoader(_Indices(10), batch_sampler=batch_sampler)
    assert [b.tolist() for b in plain] == full


def test_a_loader_with_persistent_workers_is_freed_at_once_and_stops_its_workers():
    # In a reference cycle, torch's worker iterator is freed by the garbage collector, which closes its queues before
    # it tells the workers to stop: each worker is then joined until a 5 s timeout.
    loader = ResumableDataLoader(
        _Indices(8), batch_size=2, sampler=ShuffleSampler(8), num_workers=1, persistent_workers=True
    )
    assert len(list(loader)) == 4
    workers = loader._iterator._workers
    freed = weakref.ref(loader)
    start = time.perf_counter()
    del loader  # no cycle: freed by its reference count, the iterator with it
    assert freed() is None
    assert not any(w.is_alive() for w in workers) and time.perf_counter() - start < 4


# ---------------------------------------------------------------------------------------------------- kill -9
def _steps(out: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (out / f"steps-{rank}.jsonl").read_text().splitlines()]


def _reference(task: str, out: Path, steps: int) -> None:
    """The uninterrupted run, in this process (one thread, as in the workers)."""
    spec = importlib.util.spec_from_file_location("lightning_mm_resume_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        worker.run(task, out, steps)
    finally:
        torch.set_num_threads(threads)


def _assert_resumed_like_uninterrupted(reference: Path, resumed: Path, steps: int, ranks: int = 1) -> None:
    for rank in range(ranks):
        ref, got = _steps(reference, rank), _steps(resumed, rank)
        assert [r["step"] for r in got] == list(range(1, steps + 1))  # the killed run's steps, then the resumed ones
        assert [r["ids"] for r in got] == [r["ids"] for r in ref]  # the same batches, in the same order
        assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in ref], rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "steps", "kill_at"), [("synthetic", 8, 3), ("llava", 7, 3)])
def test_killed_run_resumes_with_the_exact_next_batch(task, steps, kill_at, tmp_path, launch_worker):
    # synthetic: 6 steps per epoch; llava: 4 steps of 2 length-grouped records; both with 2 workers. The kill comes
    # mid-epoch, and the resumed run goes on into the next epoch.
    run = tmp_path / "killed"
    launch_worker(task, str(run), "--steps", str(steps), "--kill-at", str(kill_at), killed=True)
    assert len(_steps(run)) == kill_at
    launch_worker(task, str(run), "--steps", str(steps), "--resume", str(run / "ckpt" / "last.ckpt"))
    _reference(task, tmp_path / "uninterrupted", steps)
    _assert_resumed_like_uninterrupted(tmp_path / "uninterrupted", run, steps)


@pytest.mark.distributed
def test_killed_ddp_run_resumes_with_the_exact_next_batch_on_every_rank(tmp_path, launch_worker):
    # 2 gloo processes x 2 samples, 4 steps per epoch, 2 workers each: killed after step 2, resumed to step 6
    run, reference = tmp_path / "killed", tmp_path / "uninterrupted"
    launch_worker("synthetic", str(run), "--ddp", "--steps", "6", "--kill-at", "2", killed=True)
    assert len(_steps(run, 0)) == len(_steps(run, 1)) == 2
    launch_worker("synthetic", str(run), "--ddp", "--steps", "6", "--resume", str(run / "ckpt" / "last.ckpt"))
    launch_worker("synthetic", str(reference), "--ddp", "--steps", "6")
    _assert_resumed_like_uninterrupted(reference, run, 6, ranks=2)
    assert not set(_steps(run, 0)[0]["ids"]) & set(_steps(run, 1)[0]["ids"])  # the ranks split the data
