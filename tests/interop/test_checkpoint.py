"""Import: a transformers LLaVA checkpoint -> our network computes the same logits (float64, 1e-6 relative)."""

from __future__ import annotations

import pytest
import torch

import lightning_mm
from tests.interop.conftest import batch


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_imported_logits_equal_transformers(hf_checkpoint, float64):
    pair, hf_model, path = hf_checkpoint
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    net = module.network.eval()
    b = batch()
    with torch.no_grad():
        ours = net.lm_head(net(b["input_ids"], b["attention_mask"], b["pixel_values"]))  # (B, T, V)
        theirs = hf_model(**b).logits  # (B, T, V)
    real = b["attention_mask"].bool()
    assert ours.dtype == torch.float64
    assert _rel_err(ours[real], theirs[real]) < 1e-6, pair
