"""Length-grouped sampling: batches of samples of similar length (text + image tokens), in random order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["LengthGroupedSampler"]


class LengthGroupedSampler(Sampler[int]):
    """Random order in which every run of ``batch_size * world_size`` consecutive indices has similar lengths.

    Each epoch the indices are shuffled, cut into mega-batches of ``mega_batch_mult`` groups, and each mega-batch is
    sorted by length (longest first) and cut into groups of ``batch_size * world_size``. Groups are then shuffled,
    except that the group holding the longest sample comes first (an out-of-memory error shows at the first step).
    With ``modalities`` (e.g. has-image flags), groups are formed within each modality, so image and text-only
    samples rarely share a batch (like LLaVA's ``group_by_modality_length``); the leftovers of each modality form
    mixed groups, and the one partial group, if any, comes last.

    Under data parallelism, :class:`~lightning_mm.data.LlavaDataModule` cuts this order into global batches of
    ``batch_size * world_size`` (:class:`~lightning_mm.data.plans.BatchPlanSampler`) and rank ``r`` takes the
    ``r``-th slice of each, so each rank's micro-batch comes from one group. The order depends only on
    ``(seed, epoch)``, so a :class:`~lightning_mm.data.ResumableDataLoader` resumes it at the exact next batch.

    Args:
        lengths: Per-sample length (tokens, image tokens included; an estimate is fine).
        batch_size: Per-device micro-batch size.
        world_size: Number of data-parallel ranks.
        modalities: Per-sample modality key (group within each key), or None.
        mega_batch_mult: Groups per mega-batch; larger sorts more globally (less padding, less randomness).
        seed: Base seed; the epoch (see :meth:`set_epoch`) is added, and every rank must use the same seed.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        world_size: int = 1,
        modalities: Sequence[int | bool] | np.ndarray | None = None,
        mega_batch_mult: int = 50,
        seed: int = 0,
    ) -> None:
        if batch_size < 1 or world_size < 1 or mega_batch_mult < 1:
            raise ValueError("batch_size, world_size and mega_batch_mult must be >= 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)  # (N,)
        if modalities is not None and len(modalities) != len(self.lengths):
            raise ValueError(f"{len(modalities)} modalities for {len(self.lengths)} lengths")
        self.modalities = None if modalities is None else np.asarray(modalities)
        self.group_size = batch_size * world_size
        self.mega_batch_mult = mega_batch_mult
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (Lightning calls this at the start of each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def _groups(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        """(full groups, leftover indices) of ``indices``."""
        indices = indices[rng.permutation(len(indices))]
        mega = self.group_size * self.mega_batch_mult
        groups: list[np.ndarray] = []
        leftover = indices[:0]
        for start in range(0, len(indices), mega):
            chunk = indices[start : start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]  # longest first
            n_full = len(chunk) // self.group_size * self.group_size
            groups.extend(np.split(chunk[:n_full], n_full // self.group_size) if n_full else [])
            leftover = np.concatenate([leftover, chunk[n_full:]])
        return groups, leftover

    def order(self) -> np.ndarray:
        """(N,) indices of this epoch, in order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        all_idx = np.arange(len(self.lengths))
        keys = [None] if self.modalities is None else np.unique(self.modalities)
        groups: list[np.ndarray] = []
        leftovers = []
        for key in keys:
            idx = all_idx if key is None else all_idx[self.modalities == key]
            full, rest = self._groups(idx, rng)
            groups.extend(full)
            leftovers.append(rest)
        rest = np.concatenate(leftovers) if leftovers else all_idx[:0]
        rest = rest[np.argsort(-self.lengths[rest], kind="stable")]
        n_full = len(rest) // self.group_size * self.group_size
        groups.extend(rest[i : i + self.group_size] for i in range(0, n_full, self.group_size))  # mixed groups
        groups = [groups[i] for i in rng.permutation(len(groups))]
        if groups:  # the group with the longest sample first
            first = max(range(len(groups)), key=lambda g: int(self.lengths[groups[g]].max()))
            groups.insert(0, groups.pop(first))
        return np.concatenate([*groups, rest[n_full:]])  # the one partial group last

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch"}``: what the order depends on (the position in it is the loader's, see
        :class:`~lightning_mm.data.ResumableDataLoader`)."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the seed and epoch of :meth:`state_dict`."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
