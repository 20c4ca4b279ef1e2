"""Gemma 3 against transformers' Gemma3ForConditionalGeneration: bidirectional image blocks in training (one sliding,
one global layer), greedy decoding with the KV cache (tiny random models, float64, the same weights)."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration

from lightning_mm.families.gemma3.converter import check_pan_and_scan
from lightning_mm.families.gemma3.zoo import TINY_GEMMA3_CONFIG
from lightning_mm.loss import count_supervised, shifted_cross_entropy
from tests.families.gemma_fixtures import hf_checkpoint, our_network, rel_err

IMG, BOI, EOI, N_IMG, NL2 = 511, 508, 509, 16, 11


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("gemma3")
    hf = hf_checkpoint(TINY_GEMMA3_CONFIG, path, Gemma3ForConditionalGeneration, attn="sdpa")
    return hf, our_network("tiny-gemma3", path)


def _batch(left: bool, answers: bool):
    gen = torch.Generator().manual_seed(2)
    image = [NL2, BOI] + [IMG] * N_IMG + [EOI, NL2]
    shapes = [(2, 4, 5), (1, 7, 2), (0, 6, 4), (1, 2, 3)]  # images per sample (two in the first), prompt, answer
    samples = []
    for n, p, a in shapes:
        words = torch.randint(20, 400, (p + a,), generator=gen).tolist()
        prompt = [2] + words[:1] + image * n + words[1:p]
        samples.append((prompt + (words[p:] if answers else []), len(prompt)))
    length = max(len(s) for s, _ in samples)
    ids = torch.zeros(len(samples), length, dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for b, (s, p) in enumerate(samples):
        start = length - len(s) if left else 0
        ids[b, start : start + len(s)] = torch.tensor(s)
        mask[b, start : start + len(s)] = 1
        labels[b, start + p : start + len(s)] = ids[b, start + p : start + len(s)]
    pixels = torch.randn(4, 3, 64, 64, generator=gen, dtype=torch.float64)
    return ids, mask, labels, pixels


def test_training_logits_equal_transformers(pair):
    hf, ours = pair
    ids, mask, labels, pixels = _batch(left=False, answers=True)
    types = (ids == IMG).long()
    ref = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels, token_type_ids=types).logits
    ours.train()
    hidden = ours(ids, mask, pixels)
    logits = ours.lm_head(hidden)
    real = mask.bool()
    err = rel_err(logits[real].detach(), ref[real].detach())
    assert err < 1e-6, err
    loss = ours.lm_loss(hidden, labels) / count_supervised(labels)
    assert abs(float(loss) - float(shifted_cross_entropy(ref, labels))) < 1e-9 * float(loss)
    # without the image blocks (transformers' causal masks) the logits differ: the blocks are what makes them equal
    plain = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert rel_err(plain[real].detach(), ref[real].detach()) > 1e-3


def test_greedy_generation_with_cache_equals_transformers(pair):
    hf, ours = pair
    ids, mask, _, pixels = _batch(left=True, answers=False)
    types = (ids == IMG).long()
    ref = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixels,
        token_type_ids=types,
        max_new_tokens=16,
        min_new_tokens=16,
        do_sample=False,
    )[:, ids.shape[1] :]
    ours.eval()
    out = ours.generate(ids, mask, pixels, max_new_tokens=16, min_new_tokens=16)
    assert out.shape == (4, 16)
    assert torch.equal(out, ref)


def test_pan_and_scan_is_a_clear_error():
    with pytest.raises(ValueError, match="do_pan_and_scan"):
        check_pan_and_scan({"do_pan_and_scan": True}, "google/gemma-3-4b-it")
