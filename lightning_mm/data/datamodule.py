"""Shared base for the project's LightningDataModules: binds to the model's :class:`~lightning_mm.data.DataContract`."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.collate import VLMCollator
from lightning_mm.data.contract import DataContract
from lightning_mm.data.layout import ImageLayout
from lightning_mm.data.packing import packed_loader
from lightning_mm.data.resumable import ResumableDataLoader, ShuffleSampler
from lightning_mm.errors import check_range

__all__ = ["VLMDataModule"]


class VLMDataModule(L.LightningDataModule):
    """Base datamodule that reads images and renders prompts as the model it trains says.

    The tokenizer, the image-token id, the image layout (tiles and prompt ids of each image), the tower's image
    preprocessing and the chat template belong to the model: its :class:`~lightning_mm.data.DataContract`. Under a
    Trainer it is read from the LightningModule (``data_contract``) in ``setup``; outside one, call :meth:`bind`.

    Args:
        batch_size: Per-device micro-batch size.
        num_workers: DataLoader worker processes.
        seed: Seed of the training order (the epoch is added).
        pad_to_multiple_of: Round padded lengths up to a multiple of this.
    """

    def __init__(
        self, batch_size: int = 16, num_workers: int = 0, seed: int = 0, pad_to_multiple_of: int | None = None
    ) -> None:
        super().__init__()
        check_range("batch_size", batch_size, 1)
        check_range("num_workers", num_workers, 0)
        check_range("pad_to_multiple_of", pad_to_multiple_of, 1)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.contract: DataContract | None = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The bound model's tokenizer (None before :meth:`bind`)."""
        return self.contract.tokenizer if self.contract is not None else None

    @property
    def image_token_id(self) -> int | None:
        """The bound model's image-token id (None before :meth:`bind`)."""
        return self.contract.image_token_id if self.contract is not None else None

    @property
    def layout(self) -> ImageLayout | None:
        """The bound model's image layout (None before :meth:`bind`)."""
        return self.contract.layout if self.contract is not None else None

    @property
    def image_data_config(self) -> dict[str, Any] | None:
        """The bound model's image data config (None before :meth:`bind`)."""
        return self.contract.image_data_config if self.contract is not None else None

    def bind(self, contract: DataContract) -> VLMDataModule:
        """Attach the model's data contract (``module.data_contract``)."""
        if not isinstance(contract, DataContract):
            raise TypeError(
                f"bind() takes the model's DataContract (module.data_contract), got {type(contract).__name__}."
            )
        self.contract = contract
        return self

    def _bind_from_trainer(self) -> None:
        if self.contract is not None:
            return
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or not hasattr(module, "data_contract"):
            raise RuntimeError(
                f"{type(self).__name__} has no data contract: train it with a MultimodalModule or call "
                "`.bind(module.data_contract)`."
            )
        self.bind(module.data_contract)

    def setup(self, stage: str) -> None:
        self._bind_from_trainer()

    def _rank(self) -> tuple[int, int]:
        """(this rank, data-parallel ranks) of the trainer (0, 1 outside one)."""
        if self.trainer is None:
            return 0, 1
        return int(self.trainer.global_rank), int(self.trainer.world_size)

    def collator(self, padding_side: str = "right") -> VLMCollator:
        """The batch collator of this datamodule (``right`` padding for training, ``left`` for generation)."""
        return VLMCollator(
            self.tokenizer.pad_token_id,
            padding_side,
            self.image_token_id,
            pad_to_multiple_of=self.pad_to_multiple_of,
            layout=self.layout,
            prefix_lm=self.contract is not None and self.contract.attention_pattern == "prefix_lm",
        )

    def _loader(
        self,
        ds: Dataset,
        shuffle: bool = False,
        sampler: Sampler | None = None,
        batch_size: int | None = None,
        padding_side: str = "right",
    ) -> DataLoader:
        """A loader of ``ds`` with this datamodule's collator and workers.

        With ``shuffle`` (a seeded :class:`~lightning_mm.data.ShuffleSampler` unless ``sampler`` is given) or a
        ``sampler``, it is a :class:`~lightning_mm.data.ResumableDataLoader`, which saves its position in checkpoints
        (exact resume); otherwise a plain ``DataLoader`` in order.
        """
        if shuffle and sampler is None:
            sampler = ShuffleSampler(len(ds), seed=self.seed)
        loader_cls = ResumableDataLoader if sampler is not None else DataLoader
        return loader_cls(
            ds,
            batch_size=batch_size or self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collator(padding_side),
            persistent_workers=self.num_workers > 0,
        )

    def _packed_loader(self, ds: Dataset, max_length: int) -> ResumableDataLoader:
        """A training loader of padding-free rows of ``max_length`` tokens (:func:`~lightning_mm.data.packed_loader`)."""
        return packed_loader(ds, self.collator(), max_length, self.batch_size, self.seed, self.num_workers)
