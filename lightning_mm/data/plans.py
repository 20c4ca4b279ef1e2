"""Batch plans: which records make each micro-batch of each rank, planned in the main process, built in the workers.

:class:`BatchPlanSampler` reads the items of an epoch (:func:`~lightning_mm.data.mixture.mixture_items`) and cuts
them into *global batches* of ``batch_size * world_size`` records; rank ``r`` takes the ``r``-th slice of each. Every
rank reads the same items, so every record is in exactly one rank's batch, no record is repeated to even out the
ranks, and every rank takes the same number of steps (a rank whose slice of the last global batch is empty gets an
empty batch, a step without targets). Length grouping sorts a bounded buffer of global batches by estimated length
before cutting it; packing plans padding-free rows over a bounded buffer (best-fit decreasing), ``batch_size`` rows a
micro-batch. Memory stays bounded on streaming sources.

The sampler yields one plan per micro-batch; :class:`PlanDataset` turns a plan into its samples in a DataLoader
worker (rows read, images decoded, conversations tokenized there), and the collator makes the batch. Workers take
plans in turn and the DataLoader returns their batches in plan order, so the batches do not depend on the number of
workers. The order depends only on ``(seed, epoch)``: a :class:`~lightning_mm.data.ResumableDataLoader` resumes
after the plans it delivered (the skipped plans are read again, their samples are not built), streaming sources
included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, DistributedSampler, Sampler

from lightning_mm.data.collate import SKIPPED_KEY
from lightning_mm.data.conversations import to_llava_record
from lightning_mm.data.llava_records import BadSampleError
from lightning_mm.data.mixture import Item
from lightning_mm.data.packing import pack_lengths
from lightning_mm.data.record_samples import RecordSamples
from lightning_mm.data.sources import DataSource

__all__ = ["BatchPlanSampler", "IndexPlanDataset", "PlanDataset", "SamplerItems"]

_STREAM = 0x504C  # last word of the seeds drawn here


class BatchPlanSampler(DistributedSampler):
    """Plans the micro-batches of one rank: lists of items (or, when packing, lists of packs of items).

    It is a ``DistributedSampler`` so that Lightning leaves it in place under data parallelism (it splits the data
    itself, without repeating records) and calls :meth:`set_epoch` at each epoch.

    Args:
        items: ``items(epoch)``: the items of an epoch, the same on every rank: mixture items
            (:func:`~lightning_mm.data.mixture.mixture_items`), or the sample indices (or packs of them) of a map-style
            dataset in the order of a seeded sampler (:class:`SamplerItems`).
        batch_size: Records (or packed rows) per micro-batch.
        world_size: Data-parallel ranks.
        rank: This rank.
        seed: Base seed of the batch order (the epoch is added).
        lengths: ``lengths(items)``: estimated token length of each item (for ``group_by_length`` and ``packing``).
        group_by_length: Sort each buffer of global batches by length, then shuffle the batches.
        pack_length: Plan packed rows of this many tokens (None: no packing).
        buffer_batches: Global batches per buffer (grouping and packing).
        num_items: Items per epoch when known (gives the sampler a length, except when packing).
        shuffle: Shuffle the batches of a buffer (the items' order is ``items``').
    """

    def __init__(
        self,
        items: Callable[[int], Iterator[Any]],
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        lengths: Callable[[list[Item]], np.ndarray] | None = None,
        group_by_length: bool = False,
        pack_length: int | None = None,
        buffer_batches: int = 50,
        num_items: int | None = None,
        shuffle: bool = True,
    ) -> None:  # DistributedSampler.__init__ is not called: it needs a process group and a sized dataset
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or buffer_batches < 1:
            raise ValueError(f"bad plan: batch_size {batch_size}, rank {rank} of {world_size}, buffer {buffer_batches}")
        if (group_by_length or pack_length) and lengths is None:
            raise ValueError("group_by_length and packing need the items' lengths")
        self.items = items
        self.batch_size = int(batch_size)
        self.num_replicas = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.lengths = lengths
        self.group_by_length = group_by_length
        self.pack_length = pack_length
        self.buffer_batches = int(buffer_batches)
        self.num_items = num_items
        self.shuffle = shuffle
        self.drop_last = False
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Plan the batches of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.num_items is None or self.pack_length is not None:
            raise TypeError("the number of batches of this plan is known only once it is read")
        return math.ceil(self.num_items / (self.batch_size * self.num_replicas))

    def _buffers(self, size: int) -> Iterator[list[Item]]:
        buf: list[Item] = []
        for item in self.items(self.epoch):
            buf.append(item)
            if len(buf) == size:
                yield buf
                buf = []
        if buf:
            yield buf

    def global_batches(self) -> Iterator[list[Any]]:
        """The global batches of the epoch: ``batch_size * world_size`` items (or packs) each, the last maybe fewer."""
        size = self.batch_size * self.num_replicas
        if not self.group_by_length and self.pack_length is None:
            yield from self._buffers(size)
            return
        for k, buf in enumerate(self._buffers(size * self.buffer_batches)):
            rng = np.random.default_rng([self.seed, self.epoch, k, _STREAM])
            lengths = np.asarray(self.lengths(buf), dtype=np.int64)  # (n,)
            if self.pack_length is not None:
                packs = pack_lengths(np.minimum(lengths, self.pack_length), self.pack_length)
                units = [[buf[i] for i in pack] for pack in packs]
            else:
                units = [buf[i] for i in np.argsort(-lengths, kind="stable").tolist()]  # longest first
            batches = [units[i : i + size] for i in range(0, len(units), size)]
            last = batches.pop() if len(batches[-1]) < size else None  # a partial batch stays last
            order = rng.permutation(len(batches)).tolist() if self.shuffle else range(len(batches))
            yield from (batches[i] for i in order)
            if last is not None:
                yield last

    def __iter__(self) -> Iterator[list[Any]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches():
            yield batch[lo:hi]  # may be empty: the step is taken, without targets

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch"}``: what the plan depends on (the position is the loader's)."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the seed and epoch of :meth:`state_dict`."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class PlanDataset(Dataset):
    """Builds the samples of a plan: ``dataset[plan]`` is the list of its samples (of its packs, when packing).

    Args:
        sources: The sources the plan's items refer to.
        samples: Builds one sample from a record.
    """

    def __init__(self, sources: Sequence[DataSource], samples: RecordSamples) -> None:
        self.sources = list(sources)
        self.samples = samples

    def sample(self, item: Item) -> dict[str, Any]:
        """The sample of one item (a dropped-record marker when it is skipped)."""
        index, key, row = item
        source = self.sources[index]
        where = source.where(key)
        try:
            if row is None:
                row = source.row(key)
            if isinstance(row, BadSampleError):
                raise row
            if not isinstance(row, dict):
                raise BadSampleError(
                    "malformed_record", f"{where}: a record must be an object, got {type(row).__name__}"
                )
            raw, images = to_llava_record(row, source.schema, where, source.image_column)
        except BadSampleError as e:
            if self.samples.on_bad_sample == "error":
                raise
            self.samples._note(e)
            rid = row.get("id") if isinstance(row, dict) else None
            return {"id": str(rid) if rid is not None else where, SKIPPED_KEY: [e.reason]}
        return self.samples.sample(raw, images, where, source.folder(key))

    def __getitem__(self, plan: Sequence[Any]) -> list[Any]:
        return [[self.sample(i) for i in unit] if isinstance(unit, list) else self.sample(unit) for unit in plan]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources if not s.streaming)


class SamplerItems:
    """``items(epoch)`` of a seeded sampler: its order of that epoch (sample indices, or packs of them).

    Puts the orders of :class:`~lightning_mm.data.ShuffleSampler`, :class:`~lightning_mm.data.LengthGroupedSampler`
    and :class:`~lightning_mm.data.packing.PackingSampler` (all functions of ``(seed, epoch)``) behind
    :class:`BatchPlanSampler`, which splits them over ranks without repeating a unit. A sampler without ``set_epoch``
    (an in-order one) gives the same order every epoch.

    Args:
        sampler: The sampler (every rank builds the same one).
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __call__(self, epoch: int) -> Iterator[Any]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        return iter(self.sampler)


class IndexPlanDataset(Dataset):
    """Builds the samples of a plan of sample indices: ``plans[[3, [7, 1]]]`` is ``[base[3], [base[7], base[1]]]``.

    A unit of a plan is an index (one sample) or a list of indices (a packed row's samples). Other attributes
    (``lengths``, ``has_images``, ``skip_counts``, ...) and ``len()`` are the base dataset's.

    Args:
        dataset: The map-style dataset of single samples.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, plan: Sequence[Any]) -> list[Any]:
        return [
            [self.dataset[int(i)] for i in unit] if isinstance(unit, list) else self.dataset[int(unit)] for unit in plan
        ]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
