"""Shared fixtures: everything is built offline and small enough for a 2-core CPU."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture()
def tiny_module():
    """A built tiny MultimodalModule (random init, seed 0)."""
    from lightning_mm import MultimodalModule

    torch.manual_seed(0)
    module = MultimodalModule(model="tiny")
    module.configure_model()
    return module


@pytest.fixture()
def tiny_batch(tiny_module):
    """A collated batch of 4 synthetic VQA samples bound to the tiny module."""
    from lightning_mm.data import SyntheticVQADataModule

    dm = SyntheticVQADataModule(train_samples=4, val_samples=4, batch_size=4)
    dm.bind(
        tiny_module.tokenizer, tiny_module.num_image_tokens, tiny_module.image_data_config, tiny_module.image_token_id
    )
    return next(iter(dm.train_dataloader()))
