"""Padding-free packing: several samples per row, positions restarting per sample, attention confined to each sample.

A packed row holds whole samples one after the other, filled up to ``max_length`` tokens; only the end of a row is
padding. Three pieces make it:

* :class:`PackingSampler` plans the rows of an epoch from the samples' lengths (best-fit decreasing, so rows come out
  nearly full) and yields one *pack* (a list of sample indices) per row, in a seeded random order of packs;
  :class:`PackedDataset` turns a pack into its samples.
* :class:`PackedCollator` wraps a :class:`~lightning_mm.data.VLMCollator`: it concatenates each pack into one row
  (images in sample order, so the network's image splice is unchanged), pads the rows as the wrapped collator does, and
  adds ``position_ids`` (B, T) restarting at 0 at each sample (the padding after the last sample is a run of its own).
  The label of each sample's first token is -100, so no target crosses a sample boundary (the last token of one
  sample never predicts the first token of the next) and every sample keeps exactly its unpacked targets: the
  token-exact loss and its ``num_items`` count the same supervised targets packed or not
  (:func:`~lightning_mm.loss.mask_sample_starts` is the same rule, applied again by the module).
* :class:`~lightning_mm.models.VisionLanguageModel` passes ``position_ids`` to the language model (and no 2-D
  attention mask). Attention is confined to each sample by **transformers' packed-sequence support**: with
  ``position_ids`` given, no attention mask and no cache, ``transformers.masking_utils`` finds the sample boundaries
  where the positions do not increase by one and builds the causal mask of each sample for whichever attention
  backend the model runs: a dense block-diagonal mask for ``sdpa`` and ``eager``, a ``BlockMask`` for
  ``flex_attention``, variable-length kernels (no mask at all) for ``flash_attention_2``. It was chosen over a block
  mask of our own for flex attention because it needs nothing inside the language model (any transformers causal LM
  that builds its masks with ``masking_utils`` packs, LoRA, activation checkpointing and FSDP see the same modules and
  calls), it keeps the backend a setting of the model, and flex attention cannot train on CPU (torch 2.14: no
  backward on CPU), where these tests and the recipes' CPU runs happen. On GPU ``flash_attention_2`` gives the
  padding-free kernels.

Packs are planned once, from the lengths the dataset gives (:func:`sample_lengths`; estimates are fine): the
collator checks the real lengths and splits a pack that does not fit into more rows. The order of the packs changes
every epoch (it depends only on ``(seed, epoch)``, so :class:`~lightning_mm.data.ResumableDataLoader` resumes it);
the samples that share a row stay the same, which changes nothing in the gradients: attention, positions and targets
are those of each sample alone. Under data parallelism Lightning hands each rank every ``world_size``-th pack.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lightning_mm.data.collate import (
    EMPTY_KEY,
    PREFIX_MASK_KEY,
    SKIPPED_KEY,
    VLMCollator,
    _image_geometry,
    check_image_tokens,
    sample_prefix_mask,
)
from lightning_mm.data.resumable import ResumableDataLoader
from lightning_mm.data.templates import IGNORE_INDEX

__all__ = [
    "POSITION_IDS_KEY",
    "PackedCollator",
    "PackedDataset",
    "PackingSampler",
    "pack_lengths",
    "packed_loader",
    "packed_position_ids",
    "sample_lengths",
]

#: Batch key of the (B, T) positions of packed rows.
POSITION_IDS_KEY = "position_ids"
_TENSOR_KEYS = ("input_ids", "labels", "pixel_values", "image_sizes", "tiles_per_image", PREFIX_MASK_KEY, SKIPPED_KEY)
_STREAM = 0x5041  # third word of the pack order's seed


def pack_lengths(lengths: Sequence[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices of ``lengths`` grouped into bins of at most ``capacity`` in total.

    Items are placed longest first (ties in the given order), each into the fullest bin it fits in; an item longer
    than ``capacity`` gets a bin of its own.

    Args:
        lengths: (N,) item sizes.
        capacity: Size of a bin.

    Returns:
        The bins, each a list of indices into ``lengths`` (longest first), in the order they were opened.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    sizes = np.asarray(lengths, dtype=np.int64)  # (N,)
    bins: list[list[int]] = []
    free: list[int] = []  # free space of the open bins, ascending
    owner: list[int] = []  # the bin of each entry of ``free``
    for i in np.argsort(-sizes, kind="stable").tolist():
        size = int(sizes[i])
        k = bisect_left(free, size)
        if k == len(free):  # fits nowhere: a new bin
            b, room = len(bins), capacity
            bins.append([])
        else:
            b, room = owner.pop(k), free.pop(k)
        bins[b].append(i)
        room -= size
        if room > 0:
            k = bisect_left(free, room)
            free.insert(k, room)
            owner.insert(k, b)
    return bins


def packed_position_ids(lengths: Sequence[int], total: int) -> torch.Tensor:
    """(total,) positions of one packed row: 0, 1, ... restarting at each sample, then the padding's own run.

    Args:
        lengths: Token counts of the row's samples, in order.
        total: Row length after padding (at least ``sum(lengths)``).
    """
    runs = [*lengths, total - sum(lengths)]
    if runs[-1] < 0:
        raise ValueError(f"samples of {sum(lengths)} tokens do not fit a row of {total}")
    return torch.cat([torch.arange(n, dtype=torch.long) for n in runs if n > 0])  # (total,)


def sample_lengths(dataset: Dataset) -> np.ndarray:
    """(N,) token length of each sample (image tokens included): the dataset's ``lengths`` if it has them, else
    measured by loading every sample once (dropped records count as 0)."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None:
        return np.asarray(lengths, dtype=np.int64)
    return np.array([len(s.get("input_ids", ())) for s in (dataset[i] for i in range(len(dataset)))], dtype=np.int64)


class PackingSampler(Sampler[list[int]]):
    """Yields packs: lists of sample indices whose lengths fill a row of ``max_length`` tokens, in random order.

    The packs are planned once (best-fit decreasing over the whole dataset, ties broken in a seeded random order);
    each epoch yields all of them in an order that depends only on ``(seed, epoch)``. Use it with
    :class:`PackedDataset` and :class:`PackedCollator`; the loader's ``batch_size`` then counts rows.

    Args:
        lengths: Per-sample token length (image tokens included; an estimate is fine, the collator checks the real
            length). Lengths above ``max_length`` are taken as ``max_length`` (datasets cut their samples there).
        max_length: Tokens per row.
        seed: Base seed of the plan and the order; every rank must use the same.
        shuffle: Shuffle the packs each epoch (False: the planned order).
    """

    def __init__(
        self, lengths: Sequence[int] | np.ndarray, max_length: int, seed: int = 0, shuffle: bool = True
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.lengths = np.minimum(np.asarray(lengths, dtype=np.int64), max_length)  # (N,)
        self.max_length = int(max_length)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.packs = self._plan()

    def _plan(self) -> list[list[int]]:
        tie_order = np.random.default_rng([self.seed, _STREAM]).permutation(len(self.lengths))  # (N,)
        return [tie_order[b].tolist() for b in pack_lengths(self.lengths[tie_order], self.max_length)]

    @property
    def padding_fraction(self) -> float:
        """Share of the planned rows' ``len(packs) * max_length`` positions that no sample fills (by the lengths)."""
        slots = len(self.packs) * self.max_length
        return 1.0 - float(self.lengths.sum()) / slots if slots else 0.0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (Lightning calls this at the start of each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.packs)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            return iter([list(p) for p in self.packs])
        order = np.random.default_rng([self.seed, self.epoch, _STREAM]).permutation(len(self.packs))
        return iter([list(self.packs[i]) for i in order.tolist()])

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch"}``: what the order depends on."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the seed and epoch of :meth:`state_dict` (another seed plans the packs again)."""
        seed, self.epoch = int(state["seed"]), int(state["epoch"])
        if seed != self.seed:
            self.seed = seed
            self.packs = self._plan()


class PackedDataset(Dataset):
    """A map-style dataset indexed by packs: ``packed[[3, 7, 1]]`` is ``[base[3], base[7], base[1]]``.

    Other attributes (``lengths``, ``has_images``, counts of dropped records, ...) are the base dataset's.

    Args:
        dataset: The dataset of single samples.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, pack: Sequence[int]) -> list[dict[str, Any]]:
        return [self.dataset[int(i)] for i in pack]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class PackedCollator:
    """Collates packs of samples into padding-free rows: the batch of :class:`VLMCollator` plus ``position_ids``.

    Each item of the batch is a pack (a list of samples, from :class:`PackedDataset`) or a single sample; every pack
    becomes one row, and the single samples of a batch are packed together (best-fit decreasing). A pack whose real
    lengths do not fit ``max_length`` is split over more rows, so the number of rows ``B`` may exceed the number of
    packs. The batch holds, per row: ``input_ids``, ``labels`` (-100 at each sample's first token),
    ``attention_mask`` (1 on the samples, 0 on the padding after them: what token counts read), ``position_ids``,
    ``image_counts`` (images per row); ``pixel_values`` (all tiles), ``image_sizes`` and ``tiles_per_image`` of the
    images in row order; and every other per-sample key as a list per row (``id``: ``[[ids of row 0], ...]``). Dropped records and a batch of only dropped records are
    handled as :class:`VLMCollator` does.

    Args:
        collator: Pads the rows and stacks the images (right padding).
        max_length: Tokens per row; a sample longer than that is an error naming it.
    """

    def __init__(self, collator: VLMCollator, max_length: int) -> None:
        if collator.padding_side != "right":
            raise ValueError("PackedCollator: packed rows are for training, the wrapped collator must pad right")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.collator = collator
        self.max_length = int(max_length)
        # the rows are padded and stacked by a copy without the image-token check: a row is not a sample (its images
        # belong to several samples), and each sample was checked on its own (``_check``)
        self._row_collator = copy.copy(collator)
        self._row_collator.layout = None

    def _check(self, sample: Mapping[str, Any]) -> None:
        name, ids = sample.get("id", "?"), sample["input_ids"]
        if len(ids) > self.max_length:
            raise ValueError(
                f"Sample {name!r}: {len(ids)} tokens do not fit a packed row of max_length={self.max_length}."
            )
        if "labels" in sample and sample["labels"].shape != ids.shape:
            raise ValueError(
                f"Sample {name!r}: labels {tuple(sample['labels'].shape)} and input_ids {tuple(ids.shape)} differ in shape."
            )
        image_id, layout = self.collator.image_token_id, self.collator.layout
        if image_id is not None and layout is not None:
            sizes, _ = _image_geometry(sample)  # (n_images, 2)
            check_image_tokens(name, int((ids == image_id).sum()), sizes, layout, image_id)

    def _row(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """One row: the samples' tokens and images concatenated, each sample's first label -100 (and, for a prefix
        LM, each sample's own prefix)."""
        row: dict[str, Any] = {"input_ids": torch.cat([s["input_ids"] for s in samples])}  # (L,)
        if self.collator.prefix_lm:
            row[PREFIX_MASK_KEY] = torch.cat([sample_prefix_mask(s) for s in samples])  # (L,)
        if "labels" in samples[0]:
            labels = torch.cat([s["labels"] for s in samples])  # (L,)
            starts = np.cumsum([0, *(len(s["input_ids"]) for s in samples[:-1])])
            labels[torch.from_numpy(starts)] = IGNORE_INDEX  # no target across a sample boundary
            row["labels"] = labels
        with_images = [s for s in samples if s.get("pixel_values") is not None and s["pixel_values"].shape[0]]
        if with_images:
            images = [s["pixel_values"] for s in with_images]
            dtypes = {im.dtype for im in images}
            if len(dtypes) > 1:  # torch.cat would promote uint8 pixels to float (taken as already normalised)
                names = [s.get("id", "?") for s in samples]
                raise ValueError(f"Samples {names}: uint8 and normalised float images cannot share a packed row.")
            geometry = [_image_geometry(s) for s in with_images]  # per sample: (sizes (n, 2), tiles (n,))
            row["pixel_values"] = torch.cat(images)  # (n_tiles, 3, H, W), sample order
            row["image_sizes"] = torch.cat([sizes for sizes, _ in geometry])  # (n_images, 2)
            row["tiles_per_image"] = torch.cat([tiles for _, tiles in geometry])  # (n_images,)
        return row

    def rows(self, items: Sequence[Mapping[str, Any] | Sequence[Mapping[str, Any]]]) -> list[list[Mapping[str, Any]]]:
        """The samples of each row (dropped records left out), checked, in row order."""
        groups: list[list[Mapping[str, Any]]] = []
        loose: list[Mapping[str, Any]] = []
        for item in items:
            if isinstance(item, Mapping):
                loose.append(item)
            else:
                groups.append(list(item))
        if loose:
            groups.append(loose)
        rows = []
        for group in groups:
            kept = [s for s in group if "input_ids" in s]
            for s in kept:
                self._check(s)
            bins = pack_lengths([len(s["input_ids"]) for s in kept], self.max_length)
            rows.extend([kept[i] for i in b] for b in bins)
        return rows

    def __call__(self, items: Sequence[Mapping[str, Any] | Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
        samples = [s for item in items for s in ([item] if isinstance(item, Mapping) else item)]
        rows = self.rows(items)
        dropped = [{SKIPPED_KEY: s[SKIPPED_KEY]} for s in samples if SKIPPED_KEY in s]  # no input_ids: counted only
        batch = self._row_collator([self._row(r) for r in rows] + dropped)
        if batch.get(EMPTY_KEY):
            return batch
        total = batch["input_ids"].shape[1]
        positions = [packed_position_ids([len(s["input_ids"]) for s in r], total) for r in rows]
        batch[POSITION_IDS_KEY] = torch.stack(positions)  # (B, T)
        keys = dict.fromkeys(k for r in rows for s in r for k in s if k not in _TENSOR_KEYS)
        for key in keys:
            batch[key] = [[s.get(key) for s in r] for r in rows]
        return batch


def packed_loader(
    dataset: Dataset,
    collator: VLMCollator,
    max_length: int,
    batch_size: int,
    seed: int = 0,
    num_workers: int = 0,
    lengths: Sequence[int] | np.ndarray | None = None,
) -> ResumableDataLoader:
    """A training loader of packed rows: :class:`PackingSampler`, :class:`PackedDataset`, :class:`PackedCollator`.

    Args:
        dataset: Samples (``lengths`` attribute used when present, see :func:`sample_lengths`).
        collator: The collator of unpacked batches (right padding); its checks and padding apply to the rows.
        max_length: Tokens per row.
        batch_size: Rows per micro-batch.
        seed: Seed of the packs and of their order (the epoch is added).
        num_workers: DataLoader worker processes.
        lengths: Per-sample lengths (default: :func:`sample_lengths`).
    """
    sampler = PackingSampler(sample_lengths(dataset) if lengths is None else lengths, max_length, seed=seed)
    return ResumableDataLoader(
        PackedDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=PackedCollator(collator, max_length),
        persistent_workers=num_workers > 0,
    )
