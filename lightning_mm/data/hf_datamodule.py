"""LightningDataModule over data sources: Hugging Face datasets (hub, ``save_to_disk``, Parquet; map-style or
streaming), LLaVA JSON files, and mixtures of them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.data.layout import FixedLayout, sample_layout
from lightning_mm.data.mixture import Item, mixture_items
from lightning_mm.data.packing import PackedCollator
from lightning_mm.data.plans import BatchPlanSampler, PlanDataset
from lightning_mm.data.record_samples import RecordSamples
from lightning_mm.data.resumable import ResumableDataLoader
from lightning_mm.data.sources import DataSource, HFSource, LlavaJsonSource, conversation_size

__all__ = ["HFDataModule", "open_source"]

SourceSpec = str | dict[str, Any]
_SOURCE_KEYS = {"path", "name", "split", "streaming", "schema", "image_column", "image_folder", "num_shards"}
_MIX_KEYS = {"weight", "count"}
_CHARS_PER_TOKEN = 4  # text length estimate (grouping and packing only; the collator checks the real lengths)
_TOKENS_PER_TURN = 4


def open_source(spec: SourceSpec, **defaults: Any) -> DataSource:
    """The source of ``spec``: a path or hub id, or a dict of :class:`~lightning_mm.data.sources.HFSource`'s
    arguments (``path`` required). ``.json`` / ``.jsonl`` paths are LLaVA files; ``defaults`` fill unset keys."""
    spec = {"path": spec} if isinstance(spec, str) else dict(spec)
    unknown = set(spec) - _SOURCE_KEYS - _MIX_KEYS - {"data_files"}
    if unknown or "path" not in spec:
        raise ValueError(
            f"data source {spec}: {'unknown keys ' + str(sorted(unknown)) if unknown else 'no path'}; "
            f"keys: {sorted(_SOURCE_KEYS | _MIX_KEYS | {'data_files'})}"
        )
    args = {k: v for k, v in {**defaults, **spec}.items() if k not in _MIX_KEYS}
    path = args["path"]
    paths = [path] if isinstance(path, str) else list(path)
    if all(str(p).endswith((".json", ".jsonl")) for p in paths):
        return LlavaJsonSource(path, args.get("image_folder"))
    return HFSource(**args)


class _Items:
    """``items(epoch)`` of a set of sources and their mixture (see :func:`~lightning_mm.data.mixture_items`)."""

    def __init__(self, sources: Sequence[DataSource], seed: int, shuffle: bool, buffer: int, **mix: Any) -> None:
        self.sources, self.seed, self.shuffle, self.buffer, self.mix = sources, seed, shuffle, buffer, mix

    def __call__(self, epoch: int) -> Iterator[Item]:
        return mixture_items(self.sources, self.seed, epoch, shuffle=self.shuffle, buffer=self.buffer, **self.mix)


class _Lengths:
    """Estimated token lengths of items: text characters / 4, a few tokens per turn, the layout's image prompt."""

    def __init__(self, sources: Sequence[DataSource], image_tokens: int) -> None:
        self.sources = sources
        self.image_tokens = image_tokens
        self._tables: dict[int, np.ndarray] = {}

    def _estimate(self, chars: Any, turns: Any, images: Any) -> Any:
        return (
            np.ceil(np.asarray(chars) / _CHARS_PER_TOKEN)
            + _TOKENS_PER_TURN * np.asarray(turns)
            + np.asarray(images) * self.image_tokens
        )

    def _table(self, index: int) -> np.ndarray:
        if index not in self._tables:  # map-style: every row's estimate, once
            self._tables[index] = self._estimate(*self.sources[index].size_features()).astype(np.int64)
        return self._tables[index]

    def __call__(self, items: list[Item]) -> np.ndarray:
        out = np.empty(len(items), dtype=np.int64)
        for k, (index, key, row) in enumerate(items):
            source = self.sources[index]
            if row is None:
                out[k] = self._table(index)[key]
            else:
                chars, turns = conversation_size(row, source.schema)
                images = row.get(source.image_column or "images") or row.get("image") or []
                out[k] = int(self._estimate(chars, turns, len(images) if isinstance(images, list) else 1))
        return out


class HFDataModule(VLMDataModule):
    """Hugging Face datasets and LLaVA files, map-style or streaming, one source or a weighted mixture.

    A source is a hub id (``HuggingFaceM4/the_cauldron``), a ``save_to_disk`` folder, Parquet file(s) (path, glob or
    list) or a LLaVA ``.json`` / ``.jsonl`` file, or a dict of those arguments: ``path``, ``name`` (hub subset),
    ``split``, ``streaming``, ``schema`` (``llava``, ``messages``, ``cauldron``; None: detected), ``image_column``,
    ``image_folder``, ``num_shards``, ``data_files``, and for mixtures ``weight`` or ``count``. Images may be paths,
    bytes embedded in the rows, or PIL images; they are decoded in the workers. Every sample is built by the LLaVA
    path's own code (same template segments, labels, image-token and truncation checks), and a bad row is an error
    naming source, shard and row (or skipped and counted once with ``on_bad_sample: skip``).

    Every record of an epoch goes to exactly one rank and worker (none repeated to even out the ranks; every rank
    takes the same number of steps), and a mid-epoch checkpoint resumes with exactly the next batches, streaming
    sources included (:mod:`lightning_mm.data.plans`).

    Args:
        train: Training source(s).
        val: Validation source(s) (None: no validation).
        predict: Source(s) whose prompts ``lightning-mm predict`` answers (None: ``val``).
        streaming: Default of the sources' ``streaming``.
        schema: Default conversation shape (None: detected per source).
        image_folder: Default folder of relative image paths.
        num_samples: Records per epoch of a weighted mixture (None: the sources' total, map-style only).
        shuffle_buffer: Rows in the shuffle buffer of a streaming source.
        buffer_batches: Global batches per buffer of length grouping and packing (bounded on streaming sources).
        template: Chat template of the data (None: the model's).
        template_kwargs: Arguments of the template.
        max_length: Longest sample in tokens, image tokens included.
        on_bad_sample: ``error`` (raise, naming source, shard and row) or ``skip`` (skip and count by reason).
        group_by_length: Batch samples of similar estimated length together (within each buffer).
        packing: Train on padding-free rows of up to ``max_length`` tokens; ``batch_size`` then counts rows.
        batch_size: Per-device micro-batch size.
        val_batch_size: Validation/prediction batch size (None: ``batch_size``).
        num_workers: DataLoader worker processes.
        pad_to_multiple_of: Round padded lengths up to a multiple of this.
        seed: Seed of the training order (the epoch is added).
    """

    def __init__(
        self,
        train: SourceSpec | list[SourceSpec],
        val: SourceSpec | list[SourceSpec] | None = None,
        predict: SourceSpec | list[SourceSpec] | None = None,
        streaming: bool = False,
        schema: Literal["llava", "messages", "cauldron"] | None = None,
        image_folder: str | None = None,
        num_samples: int | None = None,
        shuffle_buffer: int = 1000,
        buffer_batches: int = 50,
        template: str | None = None,
        template_kwargs: dict[str, Any] | None = None,
        max_length: int = 2048,
        on_bad_sample: Literal["error", "skip"] = "error",
        group_by_length: bool = True,
        packing: bool = False,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, pad_to_multiple_of=pad_to_multiple_of
        )
        self.train = train
        self.val = val
        self.predict = predict
        self.defaults = {"streaming": streaming, "schema": schema, "image_folder": image_folder}
        self.num_samples = num_samples
        self.shuffle_buffer = shuffle_buffer
        self.buffer_batches = buffer_batches
        self.template = template
        self.template_kwargs = dict(template_kwargs or {})
        self.max_length = max_length
        self.on_bad_sample = on_bad_sample
        self.group_by_length = group_by_length
        self.packing = packing
        self.val_batch_size = val_batch_size or batch_size
        self._sources: dict[str, tuple[list[DataSource], dict[str, Any]]] = {}

    # ------------------------------------------------------------------ sources
    def sources(self, split: str) -> tuple[list[DataSource], dict[str, Any]]:
        """(sources, mixture arguments) of ``train``, ``val`` or ``predict``, opened once."""
        if split not in self._sources:
            specs = {"train": self.train, "val": self.val, "predict": self.predict or self.val}[split]
            if specs is None:
                raise ValueError(f"HFDataModule: no {split} source (set `{split}`).")
            specs = specs if isinstance(specs, list) else [specs]
            sources = [open_source(s, **self.defaults) for s in specs]
            dicts = [s if isinstance(s, dict) else {} for s in specs]
            mix: dict[str, Any] = {}
            if any("weight" in d for d in dicts):
                mix = {"weights": [float(d.get("weight", 0.0)) for d in dicts], "num_samples": self.num_samples}
            if any("count" in d for d in dicts):
                mix = {"counts": [int(d.get("count", 0)) for d in dicts]}
            self._sources[split] = (sources, mix if split == "train" else {})
        return self._sources[split]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.sources("train")

    def samples(self, generation: bool = False) -> RecordSamples:
        """The sample builder of this datamodule's settings (after binding to the model)."""
        if self.tokenizer is None:
            raise RuntimeError("HFDataModule is not bound to a model yet: run it under a Trainer or call bind().")
        return RecordSamples(
            self.tokenizer,
            self.template or self.contract.template.name,
            self.layout,
            self.image_token_id,
            max_length=self.max_length,
            on_bad_sample=self.on_bad_sample,
            generation=generation,
            template_kwargs=self.template_kwargs,
        )

    def _image_tokens(self) -> int:
        layout = sample_layout(self.layout, 1)
        if isinstance(layout, FixedLayout):
            return len(layout.prompt_ids((0, 0)))
        size = tuple((self.image_data_config or {}).get("input_size", (3, 384, 384))[1:])
        return len(layout.prompt_ids(size))

    def plan_loader(
        self, split: str, shuffle: bool, batch_size: int, padding_side: str = "right", generation: bool = False
    ) -> ResumableDataLoader:
        """The loader of ``split``: :class:`~lightning_mm.data.plans.BatchPlanSampler` plans, built in the workers."""
        sources, mix = self.sources(split)
        rank, world = self._rank()
        train = split == "train"
        packing = self.packing and train
        lengths = _Lengths(sources, self._image_tokens()) if train and (self.group_by_length or packing) else None
        num_items = None
        if all(not s.streaming for s in sources):
            num_items = mix.get("num_samples") or (sum(mix["counts"]) if "counts" in mix else None)
            num_items = num_items or sum(len(s) for s in sources)
        elif "counts" in mix:
            num_items = sum(mix["counts"])
        sampler = BatchPlanSampler(
            _Items(sources, self.seed, shuffle, self.shuffle_buffer, **mix),
            batch_size,
            world_size=world,
            rank=rank,
            seed=self.seed,
            lengths=lengths,
            group_by_length=train and self.group_by_length and not packing,
            pack_length=self.max_length if packing else None,
            buffer_batches=self.buffer_batches,
            num_items=num_items,
            shuffle=shuffle,
        )
        collate = PackedCollator(self.collator(), self.max_length) if packing else self.collator(padding_side)
        loader = ResumableDataLoader(
            PlanDataset(sources, self.samples(generation)),
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )
        if train and self.trainer is not None:
            loader.taken = self._batches_taken  # a loader without length is read one batch ahead of the steps
        return loader

    def _batches_taken(self) -> int | None:
        """Training batches of the current epoch the fit loop took (None outside a fit)."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return None
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def train_dataloader(self) -> ResumableDataLoader:
        """Training batches in a seeded order; the loader saves its position in checkpoints (exact resume)."""
        return self.plan_loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val is None:
            return []
        return self.plan_loader("val", shuffle=False, batch_size=self.val_batch_size)

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.plan_loader(
            "predict", shuffle=False, batch_size=self.val_batch_size, padding_side="left", generation=True
        )
