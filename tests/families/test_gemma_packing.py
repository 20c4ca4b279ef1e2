"""Packed rows give each family's attention pattern per sample: the same loss and gradients as the unpacked samples
(tiny Gemma 3: image blocks; tiny PaliGemma 2: prefix LM), through VLMCollator / PackedCollator."""

from __future__ import annotations

import pytest
import torch

from lightning_mm.data.collate import VLMCollator
from lightning_mm.data.packing import PackedCollator
from lightning_mm.zoo.registry import get_spec
from lightning_mm.zoo.spec import build_network
from tests.families.gemma_fixtures import perturbed

IMG = 511


def _samples(n_img: int, size: int, prefix_lm: bool) -> list[dict]:
    gen = torch.Generator().manual_seed(3)
    out = []
    for i, (images, prompt, answer) in enumerate([(1, 3, 4), (0, 5, 3), (1, 2, 6), (1, 4, 2)]):
        words = torch.randint(20, 400, (prompt + answer,), generator=gen)
        ids = torch.cat([torch.full((n_img * images,), IMG), words])  # (L,)
        labels = ids.clone()
        labels[: n_img * images + prompt] = -100
        pixels = torch.randn(images, 3, size, size, generator=gen, dtype=torch.float64)
        out.append({"id": i, "input_ids": ids, "labels": labels, "pixel_values": pixels})
    return out


def _loss_and_grads(network, batch):
    network.zero_grad()
    hidden = network(
        batch["input_ids"],
        batch["attention_mask"],
        batch["pixel_values"],
        position_ids=batch.get("position_ids"),
        prefix_mask=batch.get("prefix_mask"),
    )
    loss = network.lm_loss(hidden, batch["labels"])
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("name", "n_img", "size"), [("tiny-gemma3", 16, 64), ("tiny-paligemma", 16, 32)])
def test_packed_rows_equal_unpacked_samples(name, n_img, size):
    torch.manual_seed(0)
    network = perturbed(build_network(get_spec(name), torch_dtype=torch.float64).to(torch.float64)).train()
    prefix_lm = network.attention_pattern.needs_prefix
    samples = _samples(n_img, size, prefix_lm)
    collator = VLMCollator(0, prefix_lm=prefix_lm)
    unpacked = collator(samples)
    packed = PackedCollator(collator, max_length=64)([samples])
    assert packed["input_ids"].shape[0] < len(samples)  # several samples share a row
    loss, grads = _loss_and_grads(network, unpacked)
    packed_loss, packed_grads = _loss_and_grads(network, packed)
    assert torch.allclose(packed_loss, loss, rtol=1e-5, atol=0)
    assert grads.keys() == packed_grads.keys()
    for key, g in grads.items():
        assert torch.allclose(packed_grads[key], g, rtol=1e-5, atol=1e-5 * float(g.abs().max())), key
    if prefix_lm:  # the prefix of each sample, as the collator wrote it
        first = unpacked["prefix_mask"][0]
        assert first[: n_img + 3].all() and not first[n_img + 3 :].any()
