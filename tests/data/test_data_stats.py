"""DataStatsCallback arithmetic: dropped fraction, counts by reason, supervised fraction, sums over ranks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_mm.callbacks.data_stats import DataStatsCallback

LLAVA_DIR = Path(__file__).resolve().parents[1] / "assets" / "llava"


class _Dataset:
    def __init__(self, n: int, skip_counts: dict[str, int]) -> None:
        self.n, self.skip_counts = n, Counter(skip_counts)

    def __len__(self) -> int:
        return self.n


def _batch(lengths: list[int], supervised: list[int], skipped: list[list[str]]) -> dict:
    t = max(lengths)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    labels = torch.full((len(lengths), t), -100)
    for b, (n, s) in enumerate(zip(lengths, supervised, strict=True)):
        mask[b, :n] = 1
        labels[b, n - s : n] = 7
    return {
        "input_ids": torch.zeros(len(lengths), t, dtype=torch.long),
        "attention_mask": mask,
        "labels": labels,
        "skipped": skipped,
    }


def test_epoch_statistics():
    cb = DataStatsCallback()
    cb.on_train_epoch_start(None, None)
    cb.on_train_batch_end(None, None, None, _batch([10, 6], [2, 3], [[], ["image_missing"]]), 0)
    cb.on_train_batch_end(None, None, None, _batch([4, 8], [1, 0], [["truncated_image_span", "weird"], []]), 1)
    ds = _Dataset(4, {"unknown_role": 2})  # 4 usable records, 2 left out when read: 6 records in the file
    stats = cb.stats("train", dataset=ds)
    assert stats["skipped/image_missing"] == 1 and stats["skipped/truncated_image_span"] == 1
    assert stats["skipped/other"] == 1 and stats["skipped/unknown_role"] == 2
    assert "skipped/bad_turn_order" not in stats
    assert stats["skipped"] == 5
    assert stats["dropped_fraction"] == pytest.approx((2 + 3) / (2 + 4 + 3))  # 4 delivered, 3 dropped loading
    assert stats["supervised_fraction"] == pytest.approx(6 / 28)


def test_partial_epoch_counts_file_drops_pro_rata():
    cb = DataStatsCallback()
    cb.on_train_batch_end(None, None, None, _batch([5, 5], [1, 1], [[], []]), 0)
    stats = cb.stats("train", dataset=_Dataset(20, {"malformed_json": 10}))  # 2 of 20 records seen
    assert stats["dropped_fraction"] == pytest.approx(1 / (1 + 2))


def test_counts_are_summed_over_ranks():
    cb = DataStatsCallback()
    cb.on_train_batch_end(None, None, None, _batch([5, 5], [1, 1], [["image_unreadable"], []]), 0)
    strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce=lambda t, reduce_op: t * 2)  # 2 equal ranks
    trainer = SimpleNamespace(world_size=2, strategy=strategy)
    stats = cb.stats("train", trainer=trainer, dataset=_Dataset(4, {}))
    assert stats["skipped/image_unreadable"] == 2
    assert stats["dropped_fraction"] == pytest.approx(2 / (4 + 2))


@pytest.mark.distributed
def test_two_ranks_with_workers_deliver_each_record_once_and_count_each_bad_record_once(tmp_path, launch_worker):
    # 5 image records and 3 bad ones (2 with a missing image, dropped while loading; 1 left out when read): 7 records to
    # draw, an odd number, in one global batch of 4 per rank (4 on rank 0, 3 on rank 1; never all dropped), 2 workers
    # per rank. Before, Lightning's distributed sampler padded the 7 to 8 by repeating a record, which was then
    # delivered (or counted as skipped) twice.
    records = [r for r in json.loads((LLAVA_DIR / "llava_tiny.json").read_text()) if r.get("image")][:5]
    missing = {"image": "images/nope.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}]}
    missing["conversations"].append({"from": "gpt", "value": "Nothing."})
    bad_role = {"id": "bad-role", "conversations": [{"from": "bot", "value": "a"}, {"from": "gpt", "value": "b"}]}
    rows = [*records[:3], {"id": "missing-1", **missing}, bad_role, *records[3:], {"id": "missing-2", **missing}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    launch_worker("skip", str(tmp_path), "--ddp", "--steps", "1")
    delivered = [i for rank in (0, 1) for row in _rows(tmp_path / f"steps-{rank}.jsonl") for i in row["ids"]]
    assert sorted(delivered) == sorted(str(r["id"]) for r in records)  # each good record once, none twice
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["data/train/skipped"] == 3
    assert stats["data/train/skipped/image_missing"] == 2 and stats["data/train/skipped/unknown_role"] == 1
    assert stats["data/train/dropped_fraction"] == pytest.approx(3 / 8)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
