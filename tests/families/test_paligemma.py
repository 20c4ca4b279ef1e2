"""PaliGemma 2 against transformers' PaliGemmaForConditionalGeneration: prefix-LM masks in training, greedy decoding
with the KV cache, the loss with final logit soft-capping (tiny random models, float64, the same weights)."""

from __future__ import annotations

import pytest
import torch
from transformers import PaliGemmaForConditionalGeneration

from lightning_mm.families.paligemma.zoo import TINY_PALIGEMMA_CONFIG
from lightning_mm.loss import count_supervised, shifted_cross_entropy
from tests.families.gemma_fixtures import hf_checkpoint, our_network, rel_err

IMG, N_IMG, BOS, NL = 511, 16, 2, 10  # tiny config: image token, 16 tokens per 32 px image


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("paligemma")
    hf = hf_checkpoint(TINY_PALIGEMMA_CONFIG, path, PaliGemmaForConditionalGeneration)
    return hf, our_network("tiny-paligemma", path)


def _sample(gen: torch.Generator, image: bool, prompt: int, answer: int) -> tuple[list[int], list[int]]:
    """(ids, token types) as PaliGemmaProcessor writes them: [image] BOS prompt \\n | answer EOS."""
    words = torch.randint(20, 400, (prompt + answer,), generator=gen).tolist()
    prefix = ([IMG] * N_IMG if image else []) + [BOS] + words[:prompt] + [NL]
    suffix = words[prompt:] + [1]
    return prefix + suffix, [0] * len(prefix) + [1] * len(suffix)


def _batch(left: bool = False, answers: bool = True):
    gen = torch.Generator().manual_seed(1)
    shapes = [(True, 5, 4), (True, 2, 7), (False, 6, 3), (True, 9, 1)]  # the third sample is text only
    samples = [_sample(gen, im, p, a if answers else 0) for im, p, a in shapes]
    if not answers:
        samples = [(ids[:-1], tt[:-1]) for ids, tt in samples]  # prompts: the prefix only
    length = max(len(ids) for ids, _ in samples)
    ids = torch.zeros(len(samples), length, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for b, (i, t) in enumerate(samples):
        sl = slice(length - len(i), length) if left else slice(0, len(i))
        ids[b, sl], types[b, sl], mask[b, sl] = torch.tensor(i), torch.tensor(t), 1
    pixels = torch.randn(3, 3, 32, 32, generator=gen, dtype=torch.float64)
    return ids, types, mask, pixels


def test_training_logits_and_loss_equal_transformers(pair):
    hf, ours = pair
    ids, types, mask, pixels = _batch()
    labels = torch.where((types == 1) & (mask == 1), ids, -100)
    ref = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels, token_type_ids=types).logits  # (B, T, V)
    ours.train()
    hidden = ours(ids, mask, pixels, prefix_mask=(types == 0) & (mask == 1))  # (B, T, H)
    cap = ours.logit_softcap
    logits = cap * torch.tanh(ours.lm_head(hidden) / cap)
    real = mask.bool()
    err = rel_err(logits[real], ref[real])
    assert err < 1e-6, err
    # a causal network gives other logits: the prefix-LM masks are what makes them equal
    causal = ours(ids, mask, pixels, prefix_mask=torch.zeros_like(real))
    assert rel_err(cap * torch.tanh(ours.lm_head(causal) / cap)[real], ref[real]) > 1e-3
    loss = ours.lm_loss(hidden, labels) / count_supervised(labels)
    ref_loss = shifted_cross_entropy(ref, labels)
    assert abs(float(loss) - float(ref_loss)) < 1e-9 * float(ref_loss)


def test_greedy_generation_with_cache_equals_transformers(pair):
    hf, ours = pair
    ids, types, mask, pixels = _batch(left=True, answers=False)
    ref = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixels,
        token_type_ids=types,
        max_new_tokens=16,
        do_sample=False,
        min_new_tokens=16,
    )[:, ids.shape[1] :]
    ours.eval()
    out = ours.generate(ids, mask, pixels, max_new_tokens=16, min_new_tokens=16)
    assert out.shape == (4, 16)
    assert torch.equal(out, ref)


def test_prefix_lm_without_prefix_mask_is_an_error(pair):
    _, ours = pair
    ids, _, mask, pixels = _batch()
    with pytest.raises(ValueError, match="prefix_mask"):
        ours(ids, mask, pixels)
