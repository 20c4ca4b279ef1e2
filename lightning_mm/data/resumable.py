"""Resumable data loading: a seeded shuffle and a DataLoader that saves and restores its position in the epoch.

Lightning saves the state of every training loader that has ``state_dict``/``load_state_dict`` in the checkpoint
(``loops.fit_loop.state_dict.combined_loader``) and hands it back before the resumed epoch starts. The order of an
epoch is a function of ``(seed, epoch)`` (:class:`ShuffleSampler`, :class:`~lightning_mm.data.LengthGroupedSampler`),
so the position is just the number of batches delivered: a resumed loader skips that many batches of indices (no
sample is loaded for them) and continues with the exact next batch, with any number of workers and, under data
parallelism, on every rank (each rank skips its own batches of its own shard).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, Sampler

__all__ = ["ResumableDataLoader", "ShuffleSampler"]

log = logging.getLogger(__name__)

_STREAM = 0x5A4D  # third word of the order's seed


class ShuffleSampler(Sampler[int]):
    """A random order of ``range(num_samples)`` that depends only on ``(seed, epoch)``.

    Unlike ``RandomSampler`` (which draws a fresh seed from torch's global generator when an epoch starts), the order
    can be recomputed after a restart. Lightning calls :meth:`set_epoch` at the start of each epoch, and under data
    parallelism hands rank ``r`` the indices ``r, r + world_size, ...`` of this order.

    Args:
        num_samples: Dataset length.
        seed: Base seed; every rank must use the same.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, _STREAM])  # not the stream of a sample seeded (seed, i)
        return iter(rng.permutation(self.num_samples).tolist())

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch"}``: what the order depends on."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the seed and epoch of :meth:`state_dict`."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class _Skip:
    """Batches the loader's index sampler skips when it is iterated next (shared by the loader and its sampler)."""

    def __init__(self) -> None:
        self.batches = 0


class _SkipFirst:
    """The loader's index sampler, without the batches the loader was told to skip when its next epoch starts.

    It holds the loader's :class:`_Skip`, not the loader: a worker iterator (which holds this sampler) kept by a
    ``persistent_workers`` loader would otherwise be in a reference cycle with it, and torch's worker iterator
    freed by the garbage collector in a cycle takes 5 s per worker to stop (its queues' feeder threads are closed
    before it tells its workers to stop, so the workers never hear it and are joined until the timeout).
    """

    def __init__(self, base: Any, skip: _Skip) -> None:
        self.base = base
        self.skip = skip

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[Any]:
        # a generator: torch's iterators call iter() more than once before they draw, only a drawn one skips
        skip, self.skip.batches = self.skip.batches, 0
        yield from itertools.islice(iter(self.base), skip, None)


def _epoch_of(loader: DataLoader) -> int | None:
    """The epoch of the loader's sampler (as Lightning set it), or None if no sampler has one."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        epoch = getattr(sampler, "epoch", None)
        if isinstance(epoch, int):
            return epoch
    return None


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that saves how many batches of the current epoch it delivered, and resumes after them.

    Takes exactly ``DataLoader``'s arguments, over a map-style dataset. Its sampler must give the same order again
    for the same epoch (a seeded sampler such as :class:`ShuffleSampler` or
    :class:`~lightning_mm.data.LengthGroupedSampler`, or no shuffling); Lightning's distributed wrapper of such a
    sampler does. :meth:`state_dict` is ``{"epoch", "batches"}``; after :meth:`load_state_dict`, the next epoch that
    starts with the saved epoch skips the saved number of batches of indices (they are not loaded) and delivers the
    next batch first. An epoch other than the saved one starts from its beginning (a checkpoint written after the
    last batch of an epoch resumes with the next epoch whole).

    The position saved is the number of batches the consumer took, which is the number delivered unless
    :attr:`taken` says otherwise: Lightning fetches one batch ahead of the training step when a loader has no length
    (streamed data, packing planned as it is read), so a checkpoint written after step ``k`` finds ``k + 1``
    delivered. :class:`~lightning_mm.data.HFDataModule` sets :attr:`taken` to the fit loop's count of the epoch's
    batches.
    """

    taken: Callable[[], int | None] | None = None  # batches of the current epoch the consumer took (None: delivered)
    _delivered: int = 0  # batches delivered in the current epoch
    _resume: dict[str, Any] | None = None  # a loaded state, applied when the next epoch starts

    @property
    def _skip(self) -> _Skip:
        """What the index sampler skips when it is iterated next (one per loader, made when first asked for)."""
        box = self.__dict__.get("_skip_box")
        if box is None:
            box = self._skip_box = _Skip()
        return box

    @property
    def _index_sampler(self) -> Any:
        return _SkipFirst(super()._index_sampler, self._skip)

    def state_dict(self) -> dict[str, Any]:
        """The position: the sampler's epoch (None if it has none) and the batches of it the consumer took."""
        taken = self.taken() if self.taken is not None else None
        return {"epoch": _epoch_of(self), "batches": self._delivered if taken is None else min(taken, self._delivered)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume after ``state["batches"]`` batches when epoch ``state["epoch"]`` is iterated next."""
        self._resume = {"epoch": state.get("epoch"), "batches": int(state.get("batches", 0))}

    def _take_resume(self) -> int:
        resume, self._resume = self._resume, None
        if not resume or not resume["batches"]:
            return 0
        epoch = _epoch_of(self)
        if resume["epoch"] is not None and epoch is not None and epoch != resume["epoch"]:
            return 0  # the saved epoch is over
        skip = resume["batches"]
        if isinstance(self.dataset, IterableDataset):
            log.warning("An iterable dataset keeps its own position: the loader resumes it from its start.")
            return 0
        try:
            total = len(self)
        except TypeError:  # a sampler whose length is known only once read (streamed data): skip what is there
            total = None
        if total is not None and skip >= total:
            return 0  # saved after the last batch: nothing left of that epoch
        log.info("Resuming the data at batch %d of %s (epoch %s)", skip, total if total is not None else "?", epoch)
        return skip

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        # a generator: nothing (no sampler order, no worker) starts before the first batch is asked for, so the
        # epoch Lightning sets on the sampler when the epoch starts is the one this iteration uses
        skip = self._take_resume()
        self._skip.batches = skip
        self._delivered = skip
        for batch in super().__iter__():
            self._delivered += 1
            yield batch
