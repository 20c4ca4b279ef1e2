"""Collation: images keep their dtype, and batches leave DataLoader workers as plain dicts, small tensors by value."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
import torch.multiprocessing  # noqa: F401 - registers torch's shared-memory reductions with ForkingPickler
from torch.utils.data import DataLoader

from lightning_mm.data import VLMCollator
from lightning_mm.data.collate import INLINE_TENSOR_BYTES, WorkerBatch

IMAGE_ID, TOKENS = 9, 2


def _sample(k: int, n_images: int, dtype: torch.dtype = torch.uint8) -> dict:
    ids = torch.tensor([1] + [IMAGE_ID] * (TOKENS * n_images) + [2] * (k + 1))  # (T,)
    sample = {"id": f"s{k}", "input_ids": ids, "labels": ids.clone(), "skipped": []}
    if n_images:
        pixels = torch.randint(0, 256, (n_images, 3, 4, 4), dtype=torch.uint8)  # (n, 3, 4, 4)
        sample["pixel_values"] = pixels if dtype == torch.uint8 else pixels.to(dtype) / 255
    return sample


def _collate() -> VLMCollator:
    return VLMCollator(0, "right", IMAGE_ID, TOKENS)


def test_uint8_images_are_concatenated_as_uint8():
    samples = [_sample(0, 1), _sample(1, 0), _sample(2, 2)]
    batch = _collate()(samples)
    assert type(batch) is dict  # outside a worker: the plain dict
    assert batch["pixel_values"].dtype == torch.uint8 and tuple(batch["pixel_values"].shape) == (3, 3, 4, 4)
    assert torch.equal(batch["pixel_values"], torch.cat([samples[0]["pixel_values"], samples[2]["pixel_values"]]))
    assert batch["image_counts"].tolist() == [1, 0, 2]


def test_uint8_and_float_images_in_one_batch_are_an_error_naming_the_sample():
    with pytest.raises(ValueError, match="Sample 's2': images of dtype torch.float32 in a batch of torch.uint8"):
        _collate()([_sample(0, 1), _sample(1, 0), _sample(2, 1, torch.float32)])


def test_worker_batch_unpickles_as_a_plain_dict_of_equal_tensors():
    big = torch.arange(INLINE_TENSOR_BYTES // 4 + 1, dtype=torch.float32)  # just over the inline limit
    values = {
        "input_ids": torch.arange(12).view(3, 4),
        "mask": torch.tensor([[True, False]]),
        "half": torch.randn(2, 3).to(torch.bfloat16),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3, 4, 4, dtype=torch.uint8),
        "strided": torch.arange(20).view(4, 5).t(),  # not contiguous
        "big": big,
        "id": ["a", "b"],
        "nothing": None,
    }
    payload = ForkingPickler.dumps(WorkerBatch(values))
    out = pickle.loads(payload)
    assert type(out) is dict and list(out) == list(values)
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            assert out[key].dtype == value.dtype and torch.equal(out[key], value), key
        else:
            assert out[key] == value
    assert len(payload) < INLINE_TENSOR_BYTES  # the big tensor went through shared memory, not the pickle
    out["input_ids"] += 1  # rebuilt tensors own writable memory
    assert torch.equal(out["input_ids"], values["input_ids"] + 1)


def test_small_tensors_travel_inside_the_pickle():
    small = {"x": torch.zeros(4000, dtype=torch.uint8)}
    assert len(ForkingPickler.dumps(WorkerBatch(small))) > 4000  # the bytes themselves
    assert len(ForkingPickler.dumps(small)) < 4000  # torch's default: a shared-memory handle


def test_workers_deliver_plain_dicts_equal_to_single_process_batches():
    samples = [_sample(k, k % 3) for k in range(10)]
    collate = _collate()
    serial = list(DataLoader(samples, batch_size=4, collate_fn=collate))
    parallel = list(DataLoader(samples, batch_size=4, collate_fn=collate, num_workers=2))
    assert len(serial) == len(parallel) == 3
    kinds = DataLoader(samples, batch_size=4, collate_fn=lambda s: type(collate(s)).__name__, num_workers=1)
    assert set(kinds) == {"WorkerBatch"}  # in a worker the collator hands back the pickle-friendly batch
    for a, b in zip(serial, parallel, strict=True):
        assert type(b) is dict and list(a) == list(b)
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key
