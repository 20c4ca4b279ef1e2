"""The records of an epoch: each source's order, and several sources mixed by weights or exact counts.

An item is ``(source index, key, row)``: ``key`` is the row index of a map-style source or ``(shard, row)`` of a
streaming one, and ``row`` is the streamed row itself (None for map-style rows, read by the worker that builds the
sample). Everything depends only on ``(seed, epoch)``: every rank and every restart computes the same items.

* One source: each record once per epoch, in a seeded permutation (map-style) or in a seeded shard order through a
  bounded shuffle buffer (streaming).
* Several sources: ``counts`` takes exactly that many records of each source, in a seeded random interleaving;
  ``weights`` draws the source of each of ``num_samples`` records with those probabilities. A source that runs out
  starts its next pass (a new order). Without either, every record of every source once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lightning_mm.data.sources import DataSource

__all__ = ["Item", "mixture_items", "shuffle_buffer", "source_items"]

Item = tuple[int, Any, Any]  # (source index, key, streamed row or None)
_STREAM = 0x4D58  # last word of the seeds drawn here
_CHUNK = 4096  # source labels drawn at a time (weights)


def shuffle_buffer(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """``items`` through a shuffle buffer of ``size`` (memory bounded by it; deterministic given ``rng``)."""
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        yield buf[j]
        buf[j] = item
    for j in rng.permutation(len(buf)).tolist():
        yield buf[j]


def source_items(
    source: DataSource,
    index: int,
    seed: int,
    epoch: int,
    repeat: int = 0,
    shuffle: bool = True,
    buffer: int = 1000,
) -> Iterator[Item]:
    """The items of one pass over ``source`` (its ``repeat``-th pass in the epoch).

    Args:
        source: The source.
        index: Its index among the run's sources.
        seed: Base seed; the epoch and the pass are added.
        epoch: The epoch.
        repeat: Which pass of the epoch (a mixture that takes more records than a source holds starts it again).
        shuffle: Seeded order (False: the source's own order).
        buffer: Shuffle buffer of a streaming source, in rows.
    """
    rng = np.random.default_rng([seed, epoch, index, repeat, _STREAM])
    if not source.streaming:
        n = len(source)
        order = rng.permutation(n) if shuffle else np.arange(n)
        for i in order.tolist():
            yield (index, i, None)
        return
    shards = rng.permutation(source.num_shards).tolist() if shuffle else range(source.num_shards)
    rows = ((index, (s, r), row) for s in shards for r, row in enumerate(source.iter_shard(s)))
    yield from shuffle_buffer(rows, buffer, rng) if shuffle and buffer > 1 else rows


def _passes(source: DataSource, index: int, seed: int, epoch: int, shuffle: bool, buffer: int) -> Iterator[Item]:
    repeat = 0
    while True:
        empty = True
        for item in source_items(source, index, seed, epoch, repeat, shuffle, buffer):
            empty = False
            yield item
        if empty:
            raise ValueError(f"{source.name}: no rows")
        repeat += 1


def mixture_items(
    sources: Sequence[DataSource],
    seed: int,
    epoch: int,
    weights: Sequence[float] | None = None,
    counts: Sequence[int] | None = None,
    num_samples: int | None = None,
    shuffle: bool = True,
    buffer: int = 1000,
) -> Iterator[Item]:
    """The items of one epoch over ``sources`` (see the module docstring).

    Args:
        sources: The sources.
        seed: Base seed (the epoch is added).
        epoch: The epoch.
        weights: Relative weight of each source (with ``num_samples``).
        counts: Exact number of records of each source per epoch.
        num_samples: Records per epoch with ``weights`` (None: the sources' total length, map-style only).
        shuffle: Seeded orders (False: each source in order, one after the other; no weights).
        buffer: Shuffle buffer of streaming sources, in rows.
    """
    if weights is not None and counts is not None:
        raise ValueError("give the mixture weights or counts, not both")
    if len(sources) == 1 and weights is None and counts is None:
        yield from source_items(sources[0], 0, seed, epoch, 0, shuffle, buffer)
        return
    rng = np.random.default_rng([seed, epoch, _STREAM])
    if weights is None and counts is None:  # every record of every source once
        if all(not s.streaming for s in sources):
            counts = [len(s) for s in sources]
        else:
            yield from _until_all_done(sources, seed, epoch, shuffle, buffer, rng)
            return
    passes = [_passes(s, i, seed, epoch, shuffle, buffer) for i, s in enumerate(sources)]
    if counts is not None:
        if len(counts) != len(sources) or any(int(c) < 0 for c in counts):
            raise ValueError(f"counts {list(counts)} must be one count >= 0 per source ({len(sources)})")
        labels = np.repeat(np.arange(len(sources)), [int(c) for c in counts])
        for s in (rng.permutation(labels) if shuffle else labels).tolist():
            yield next(passes[s])
        return
    p = np.asarray(weights, dtype=np.float64)
    if len(p) != len(sources) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"weights {list(weights)} must be one weight >= 0 per source ({len(sources)}), not all 0")
    if num_samples is None:
        if any(s.streaming for s in sources):
            raise ValueError("a weighted mixture with streaming sources needs num_samples (records per epoch)")
        num_samples = sum(len(s) for s in sources)
    left = int(num_samples)
    while left > 0:
        chunk = min(left, _CHUNK)
        for s in rng.choice(len(sources), size=chunk, p=p / p.sum()).tolist():
            yield next(passes[s])
        left -= chunk


def _until_all_done(
    sources: Sequence[DataSource], seed: int, epoch: int, shuffle: bool, buffer: int, rng: np.random.Generator
) -> Iterator[Item]:
    """Every item of every source once: the next source drawn uniformly among those not yet exhausted."""
    live = [source_items(s, i, seed, epoch, 0, shuffle, buffer) for i, s in enumerate(sources)]
    alive = list(range(len(live)))
    while alive:
        k = int(rng.integers(len(alive))) if shuffle else 0
        item = next(live[alive[k]], None)
        if item is None:
            alive.pop(k)
            continue
        yield item
