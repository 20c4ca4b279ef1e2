"""LightningDataModule for LLaVA-format files (alignment captions, instruction tuning, users' own data)."""

from __future__ import annotations

import os
from typing import Any, Literal

from torch.utils.data import DataLoader, Sampler, SequentialSampler

from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.data.llava import LlavaDataset
from lightning_mm.data.packing import PackedCollator, PackingSampler
from lightning_mm.data.plans import BatchPlanSampler, IndexPlanDataset, SamplerItems
from lightning_mm.data.resumable import ResumableDataLoader, ShuffleSampler
from lightning_mm.data.sampler import LengthGroupedSampler
from lightning_mm.errors import ConfigError

__all__ = ["LlavaDataModule"]


def _check_paths(files: dict[str, str | list[str] | None], image_folder: str | None) -> None:
    """Raise :class:`~lightning_mm.errors.ConfigError` naming the argument and the path of a data file that does not
    exist (or is no file) and of an image folder that is no folder."""
    for name, value in files.items():
        paths = [] if value is None else [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for path in paths:
            if not os.path.isfile(path):
                what = "is a folder, not a data file" if os.path.isdir(path) else "does not exist"
                raise ConfigError(
                    f"LlavaDataModule {name}: {str(path)!r} {what} (working directory {os.getcwd()!r}). Point it "
                    "at a LLaVA-format .json or .jsonl file."
                )
    if image_folder is not None and not os.path.isdir(image_folder):
        what = "is a file, not a folder" if os.path.exists(image_folder) else "does not exist"
        raise ConfigError(
            f"LlavaDataModule image_folder: {str(image_folder)!r} {what} (working directory {os.getcwd()!r}). Point "
            "it at the folder the records' image paths are relative to, or leave it out (each data file's folder)."
        )


class LlavaDataModule(VLMDataModule):
    """LLaVA-format conversations (``.json`` list or ``.jsonl``) for ``lightning-mm fit``.

    The tokenizer, image-token count and image preprocessing come from the model (see
    :class:`~lightning_mm.data.VLMDataModule`); the chat template defaults to the model's own.

    Under data parallelism every training and validation record of an epoch goes to exactly one rank and worker,
    none repeated to even out the ranks, and every rank takes the same number of steps (a rank whose share of the
    last global batch is empty takes a step without targets): the seeded order is cut into global batches of
    ``batch_size * world_size`` by :class:`~lightning_mm.data.plans.BatchPlanSampler`, as
    :class:`~lightning_mm.data.HFDataModule` does.

    Args:
        train_path: Training file(s).
        val_path: Validation file(s) (None: no validation).
        predict_path: File(s) whose prompts ``lightning-mm predict`` answers (None: ``val_path``).
        image_folder: Folder the image paths in the records are relative to (None: each data file's folder). Image
            paths stay inside it unless ``allow_images_outside_folder``.
        template: Chat template of the data: ``plain``, ``vicuna_v1``, ``llama3``, ``chatml`` or ``tokenizer`` (None:
            the model's). Overriding it renders the data only (e.g. LLaVA's ``plain`` projector pretraining); ``chat``
            and ``export`` use the model's own (``model_overrides.template``). How images are fitted to the tower
            (``image_aspect``) is the model's setting.
        template_kwargs: Arguments of the template (e.g. ``{"system_prompt": "..."}``).
        max_length: Longest sample in tokens, image tokens included (longer: cut, or dropped if the cut would fall
            inside an image span).
        on_bad_sample: ``error`` (raise, naming file, line and id) or ``skip`` (skip and count by reason).
        group_by_length: Batch samples of similar length (text + image tokens) together.
        group_by_modality: With ``group_by_length``, keep image and text-only samples in separate batches.
        packing: Train on padding-free rows of up to ``max_length`` tokens, several samples each, attention confined
            to each sample (:mod:`lightning_mm.data.packing`); ``batch_size`` then counts rows.
        batch_size: Per-device micro-batch size.
        val_batch_size: Validation/prediction batch size (None: ``batch_size``).
        num_workers: DataLoader worker processes.
        pad_to_multiple_of: Round padded lengths up to a multiple of this.
        seed: Seed of the training order (the epoch is added).
        allow_images_outside_folder: Accept image paths that leave the image folder (absolute paths, ``..``,
            symbolic links pointing out of it); by default each is a bad record (``image_outside_folder``).

    Raises:
        ConfigError: when ``train_path``, ``val_path`` or ``predict_path`` names no file or ``image_folder`` no
            folder (checked here, before the model is built).
    """

    def __init__(
        self,
        train_path: str | list[str],
        val_path: str | list[str] | None = None,
        predict_path: str | list[str] | None = None,
        image_folder: str | None = None,
        template: str | None = None,
        template_kwargs: dict[str, Any] | None = None,
        max_length: int = 2048,
        on_bad_sample: Literal["error", "skip"] = "error",
        group_by_length: bool = True,
        group_by_modality: bool = True,
        packing: bool = False,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
        allow_images_outside_folder: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, pad_to_multiple_of=pad_to_multiple_of
        )
        self.train_path = train_path
        self.val_path = val_path
        self.predict_path = predict_path
        self.image_folder = image_folder
        self.template = template
        self.template_kwargs = dict(template_kwargs or {})
        self.max_length = max_length
        self.on_bad_sample = on_bad_sample
        self.group_by_length = group_by_length
        self.group_by_modality = group_by_modality
        self.packing = packing
        self.val_batch_size = val_batch_size or batch_size
        self.allow_images_outside_folder = allow_images_outside_folder
        _check_paths({"train_path": train_path, "val_path": val_path, "predict_path": predict_path}, image_folder)
        self.train_dataset: LlavaDataset | None = None
        self.val_dataset: LlavaDataset | None = None
        self.predict_dataset: LlavaDataset | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.train_dataset is None:
            self.train_dataset = self.dataset(self.train_path)
        if stage in ("fit", "validate", "test") and self.val_path is not None and self.val_dataset is None:
            self.val_dataset = self.dataset(self.val_path)
        predict_path = self.predict_path or self.val_path
        if stage == "predict" and self.predict_dataset is None:
            if predict_path is None:
                raise ValueError("LlavaDataModule: set predict_path (or val_path) to predict.")
            self.predict_dataset = self.dataset(predict_path, generation=True)

    def dataset(self, path: str | list[str], generation: bool = False) -> LlavaDataset:
        """A :class:`LlavaDataset` of ``path`` with this datamodule's settings (after binding to the model)."""
        if self.tokenizer is None:
            raise RuntimeError("LlavaDataModule is not bound to a model yet: run it under a Trainer or call bind().")
        return LlavaDataset(
            path,
            self.image_folder,
            self.tokenizer,
            self.template or self.contract.template.name,
            num_image_tokens=None,
            image_token_id=self.image_token_id,
            max_length=self.max_length,
            on_bad_sample=self.on_bad_sample,
            generation=generation,
            template_kwargs=self.template_kwargs,
            layout=self.layout,
            allow_images_outside_folder=self.allow_images_outside_folder,
        )

    def plan_loader(
        self, dataset: LlavaDataset, order: Sampler, batch_size: int, packed: bool = False
    ) -> ResumableDataLoader:
        """A loader of ``dataset`` in the order of ``order`` (indices, or packs of them), cut into global batches of
        ``batch_size * world_size`` units of which this rank takes its own slice (no unit repeated across ranks)."""
        rank, world = self._rank()
        sampler = BatchPlanSampler(
            SamplerItems(order), batch_size, world_size=world, rank=rank, seed=self.seed, num_items=len(order)
        )
        return ResumableDataLoader(
            IndexPlanDataset(dataset),
            batch_size=None,  # the sampler yields whole micro-batches
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=PackedCollator(self.collator(), self.max_length) if packed else self.collator(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        """Training batches in a seeded order; the loader saves its position in checkpoints (exact resume).

        The order (of samples, of length groups of ``batch_size * world_size`` samples, or of packed rows) depends
        only on ``(seed, epoch)``; each rank takes its slice of each global batch.
        """
        ds = self.train_dataset
        if self.packing:
            order = PackingSampler(ds.lengths, self.max_length, seed=self.seed)
        elif not self.group_by_length:
            order = ShuffleSampler(len(ds), seed=self.seed)
        else:
            order = LengthGroupedSampler(
                ds.lengths,
                self.batch_size,
                world_size=self._rank()[1],
                modalities=ds.has_images if self.group_by_modality else None,
                seed=self.seed,
            )
        return self.plan_loader(ds, order, self.batch_size, packed=self.packing)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in file order, each record on one rank only."""
        if self.val_dataset is None:
            return []
        return self.plan_loader(self.val_dataset, SequentialSampler(self.val_dataset), self.val_batch_size)

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Prediction batches in file order (a plain loader: Lightning tracks its indices for the prediction writer)."""
        return self._loader(self.predict_dataset, batch_size=self.val_batch_size, padding_side="left")
