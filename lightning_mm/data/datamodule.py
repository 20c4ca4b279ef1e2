"""Shared base for the project's LightningDataModules: binds to the model's tokenizer and image geometry."""

from __future__ import annotations

from typing import Any

import lightning as L
from transformers import PreTrainedTokenizerBase

__all__ = ["VLMDataModule"]


class VLMDataModule(L.LightningDataModule):
    """Base datamodule that takes its tokenizer and image geometry from the model it trains.

    The tokenizer, the number of image tokens per image and timm's image data config belong to the model (they depend
    on the LLM and the vision tower + projector). Under a Trainer they are read from the LightningModule in ``setup``;
    outside one, call :meth:`bind` (or pass them to the constructor).

    Args:
        batch_size: Per-device micro-batch size.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, batch_size: int = 16, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.num_image_tokens: int | None = None
        self.image_data_config: dict[str, Any] | None = None
        self.image_token_id: int | None = None

    def bind(
        self,
        tokenizer: PreTrainedTokenizerBase,
        num_image_tokens: int,
        image_data_config: dict[str, Any],
        image_token_id: int,
    ) -> VLMDataModule:
        """Attach the model's tokenizer, image-token count, timm data config and image-token id."""
        self.tokenizer = tokenizer
        self.num_image_tokens = int(num_image_tokens)
        self.image_data_config = dict(image_data_config)
        self.image_token_id = int(image_token_id)
        return self

    def _bind_from_trainer(self) -> None:
        if self.tokenizer is not None:
            return
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or not hasattr(module, "tokenizer"):
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizer: train it with a MultimodalModule or call `.bind(...)`."
            )
        self.bind(module.tokenizer, module.num_image_tokens, module.image_data_config, module.image_token_id)

    def setup(self, stage: str) -> None:
        self._bind_from_trainer()
