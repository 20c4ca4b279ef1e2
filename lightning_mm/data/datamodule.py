"""Shared base for the project's LightningDataModules: binds to the model's tokenizer and image geometry."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.collate import VLMCollator
from lightning_mm.data.layout import ImageLayout
from lightning_mm.data.packing import packed_loader
from lightning_mm.data.resumable import ResumableDataLoader, ShuffleSampler

__all__ = ["VLMDataModule"]


class VLMDataModule(L.LightningDataModule):
    """Base datamodule that takes its tokenizer and image geometry from the model it trains.

    The tokenizer, the number of image tokens per image and timm's image data config belong to the model (they depend
    on the LLM and the vision tower + projector). Under a Trainer they are read from the LightningModule in ``setup``;
    outside one, call :meth:`bind`. A model whose images take a number of tokens that depends on their size also gives
    its :class:`~lightning_mm.data.ImageLayout` (the module's ``image_layout`` attribute, or ``bind(layout=...)``).

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
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.num_image_tokens: int | None = None
        self.image_data_config: dict[str, Any] | None = None
        self.image_token_id: int | None = None
        self.layout: ImageLayout | None = None

    def bind(
        self,
        tokenizer: PreTrainedTokenizerBase,
        num_image_tokens: int,
        image_data_config: dict[str, Any],
        image_token_id: int,
        layout: ImageLayout | None = None,
    ) -> VLMDataModule:
        """Attach the model's tokenizer, image-token count, timm data config, image-token id and image layout.

        Args:
            tokenizer: The LM's tokenizer.
            num_image_tokens: Tokens per image of the default :class:`~lightning_mm.data.FixedLayout`.
            image_data_config: timm data config of the tower.
            image_token_id: Id of the image token.
            layout: How images become tiles and prompt ids, when the count of tokens depends on the image (None: a
                fixed layout of ``num_image_tokens`` tokens, one tile resized to ``image_data_config``).
        """
        self.tokenizer = tokenizer
        self.num_image_tokens = int(num_image_tokens)
        self.image_data_config = dict(image_data_config)
        self.image_token_id = int(image_token_id)
        self.layout = layout
        return self

    def _bind_from_trainer(self) -> None:
        if self.tokenizer is not None:
            return
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or not hasattr(module, "tokenizer"):
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizer: train it with a MultimodalModule or call `.bind(...)`."
            )
        layout = getattr(module, "image_layout", None)  # a model whose image-token count depends on the image
        self.bind(module.tokenizer, module.num_image_tokens, module.image_data_config, module.image_token_id, layout)

    def setup(self, stage: str) -> None:
        self._bind_from_trainer()

    def collator(self, padding_side: str = "right") -> VLMCollator:
        """The batch collator of this datamodule (``right`` padding for training, ``left`` for generation)."""
        return VLMCollator(
            self.tokenizer.pad_token_id,
            padding_side,
            self.image_token_id,
            self.num_image_tokens,
            pad_to_multiple_of=self.pad_to_multiple_of,
            layout=self.layout,
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
