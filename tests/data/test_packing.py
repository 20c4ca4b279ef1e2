"""Padding-free packing: rows, positions and labels of packed batches, and the same loss and gradients as unpacked."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_mm import MultimodalModule
from lightning_mm.data import LlavaDataModule, SyntheticVQADataModule, SyntheticVQADataset, VLMCollator
from lightning_mm.data.packing import (
    PackedCollator,
    PackedDataset,
    PackingSampler,
    pack_lengths,
    packed_loader,
    packed_position_ids,
)
from lightning_mm.loss import count_supervised, mask_sample_starts, shift_labels
from lightning_mm.models.packed_attention import use_packed_attention
from lightning_mm.placement import Placement

IMAGE_ID, TOKENS = 9, 2


def _sample(k: int, length: int, n_images: int = 0) -> dict:
    ids = torch.tensor([1] + [IMAGE_ID] * (TOKENS * n_images) + [10 + k] * (length - 1 - TOKENS * n_images))  # (L,)
    labels = ids.clone()
    labels[: 1 + TOKENS * n_images] = -100
    sample = {"id": f"s{k}", "input_ids": ids, "labels": labels}
    if n_images:
        sample["pixel_values"] = torch.full((n_images, 3, 4, 4), k, dtype=torch.uint8)  # (n, 3, 4, 4)
    return sample


def _collator(max_length: int = 10) -> PackedCollator:
    return PackedCollator(VLMCollator(0, "right", IMAGE_ID, TOKENS), max_length)


# ---------------------------------------------------------------------------------------------------- planning rows
def test_pack_lengths_fills_bins_best_fit_decreasing():
    lengths = [6, 4, 3, 3, 2, 5, 7]
    bins = pack_lengths(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every item once
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 3  # 30 units in 3 bins of 10: no waste
    assert pack_lengths([12, 3], 10) == [[0], [1]]  # too long: a bin of its own


def test_packing_sampler_yields_every_sample_once_in_an_order_set_by_seed_and_epoch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=200)
    sampler = PackingSampler(lengths, 64, seed=3)
    first = list(sampler)
    assert sorted(i for p in first for i in p) == list(range(200))
    assert all(lengths[p].sum() <= 64 for p in first)
    assert sampler.padding_fraction == pytest.approx(1 - lengths.sum() / (64 * len(sampler)))
    assert len(sampler) <= 1.07 * np.ceil(lengths.sum() / 64)  # within 7 % of the fewest rows possible
    assert list(PackingSampler(lengths, 64, seed=3)) == first  # the plan and order depend only on the seed
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(map(tuple, second)) == sorted(map(tuple, first))  # same packs, new order
    resumed = PackingSampler(lengths, 64, seed=0)
    resumed.load_state_dict(sampler.state_dict())
    assert list(resumed) == second


def test_positions_restart_at_each_sample_and_the_padding_is_a_run_of_its_own():
    assert packed_position_ids([3, 2], 7).tolist() == [0, 1, 2, 0, 1, 0, 1]
    assert packed_position_ids([4], 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="do not fit"):
        packed_position_ids([4, 4], 7)


# ---------------------------------------------------------------------------------------------------- collation
def test_packed_rows_hold_the_samples_images_in_order_and_no_cross_sample_target():
    samples = [_sample(0, 5, 1), _sample(1, 4), _sample(2, 6, 2), _sample(3, 3)]
    batch = _collator(10)([samples[:2], samples[2:]])  # two packs: two rows
    assert batch["input_ids"].shape == (2, 9)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 1, 2]]
    assert batch["attention_mask"].sum(dim=1).tolist() == [9, 9]
    assert batch["id"] == [["s0", "s1"], ["s2", "s3"]] and batch["image_counts"].tolist() == [1, 2]
    expected = torch.cat([samples[0]["pixel_values"], samples[2]["pixel_values"]])
    assert torch.equal(batch["pixel_values"], expected)  # sample order: the splice fills image tokens in this order
    assert (batch["labels"][batch["position_ids"] == 0] == -100).all()  # no sample's first token is a target
    unpacked = VLMCollator(0, "right", IMAGE_ID, TOKENS)(samples)
    assert int(count_supervised(batch["labels"])) == int(count_supervised(unpacked["labels"]))
    # the last token of a sample never predicts the first token of the next
    targets = shift_labels(batch["labels"])
    assert targets[0, 4] == -100 and targets[1, 5] == -100


def test_a_pack_that_does_not_fit_is_split_and_loose_samples_are_packed_together():
    samples = [_sample(0, 6), _sample(1, 6), _sample(2, 3), _sample(3, 4)]
    batch = _collator(10)([samples[:2]])  # estimated to fit, 12 real tokens: two rows
    assert batch["input_ids"].shape[0] == 2 and batch["id"] == [["s0"], ["s1"]]
    loose = _collator(10)(samples)  # a plain batch of samples: 19 tokens in 2 rows
    assert loose["input_ids"].shape[0] == 2
    assert sorted(i for row in loose["id"] for i in row) == ["s0", "s1", "s2", "s3"]


def test_dropped_records_are_counted_and_an_all_dropped_batch_is_the_empty_one():
    dropped = {"skipped": ["too_long"]}
    batch = _collator(10)([[_sample(0, 5), dropped]])
    assert batch["skipped"] == ["too_long"] and batch["id"] == [["s0"]]
    empty = _collator(10)([[dropped]])
    assert empty["empty"] is True and "position_ids" not in empty


def test_bad_samples_are_named():
    with pytest.raises(ValueError, match="Sample 's0': 12 tokens do not fit a packed row of max_length=10"):
        _collator(10)([_sample(0, 12)])
    bad = _sample(1, 5, 1)
    bad["pixel_values"] = bad["pixel_values"][:0]
    with pytest.raises(ValueError, match="Sample 's1': 2 image tokens but 0 image"):
        _collator(10)([bad])
    with pytest.raises(ValueError, match="pad right"):
        PackedCollator(VLMCollator(0, "left"), 10)


def test_packed_loader_delivers_every_sample_once_per_epoch():
    samples = [_sample(k, 3 + k % 5, k % 2) for k in range(12)]
    loader = packed_loader(samples, VLMCollator(0, "right", IMAGE_ID, TOKENS), 10, batch_size=2)
    seen = [i for batch in loader for row in batch["id"] for i in row]
    assert sorted(seen) == sorted(s["id"] for s in samples)
    assert isinstance(loader.dataset, PackedDataset) and loader.dataset.dataset is samples


def test_the_loss_masks_sample_starts_only_with_positions():
    labels = torch.tensor([[5, 6, 7, 8]])
    assert mask_sample_starts(labels, None) is labels
    assert mask_sample_starts(labels, torch.tensor([[0, 1, 0, 1]])).tolist() == [[-100, 6, -100, 8]]


# ---------------------------------------------------------------------------------------------------- same training
def _tiny_samples(module: MultimodalModule) -> list[dict]:
    """Image samples with 1-3 questions and text-only samples (no image), all of different lengths."""
    args = (module.tokenizer, module.num_image_tokens, module.image_data_config, module.image_token_id)
    samples = []
    for q in (1, 3, 2):
        samples += [SyntheticVQADataset(*args, num_samples=4, seed=q, questions_per_image=q)[i] for i in (0, 1)]
    samples += [
        SyntheticVQADataset(*args, num_samples=4, seed=7, mode="text", questions_per_image=3)[i] for i in (0, 3)
    ]
    return samples


def _loss_and_grads(module: MultimodalModule, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    module._window_items = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        loss_sum = module.training_step(batch, 0)  # summed over the supervised targets (token-exact mode)
    loss_sum.backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    return float(loss_sum.detach()) / module._window_items, grads


@pytest.mark.parametrize("setting", ["full", "lora", "activation_checkpointing", "sdpa_packed"])
def test_packed_and_unpacked_training_give_the_same_loss_and_gradients(setting):
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", activation_checkpointing=setting == "activation_checkpointing")
    if setting == "lora":
        module.set_placement("llm", Placement(mode="lora", r=4, alpha=8.0))
    module.configure_model()
    if setting == "sdpa_packed":  # attention block by block (unpacked batches fall back to sdpa)
        use_packed_attention(module.network.llm)
    module.train()
    for p in module.network.parameters():  # norms and biases away from their init
        p.data.add_(0.02 * torch.randn_like(p))
    samples = _tiny_samples(module)
    collate = VLMCollator(module.tokenizer.pad_token_id, "right", module.image_token_id, module.num_image_tokens)
    unpacked = collate(copy.deepcopy(samples))
    longest = max(len(s["input_ids"]) for s in samples)
    packed = PackedCollator(collate, 2 * longest)(copy.deepcopy(samples))
    assert packed["input_ids"].shape[0] < len(samples)
    assert packed["attention_mask"].float().mean() > unpacked["attention_mask"].float().mean()  # less padding
    assert any(len(row) > 1 for row in packed["id"])  # rows really share samples, with and without images
    loss, grads = _loss_and_grads(module, unpacked)
    n_unpacked = module._window_items
    packed_loss, packed_grads = _loss_and_grads(module, packed)
    assert module._window_items == n_unpacked  # num_items counts the same supervised targets
    assert packed_loss == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == packed_grads.keys() and len(grads) > 10
    if setting == "lora":
        assert any(".lora_A." in n for n in grads) and not any("llm" in n and "lora" not in n for n in grads)
    for name, expected in grads.items():
        error = float((packed_grads[name] - expected).abs().max() / expected.abs().max().clamp(min=1e-12))
        assert error < 1e-5, f"{name}: relative error {error:.2e}"


def test_without_confined_attention_the_gradients_differ():
    """The control: the same packed rows with a plain causal mask (no positions) let samples see each other."""
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny")
    module.configure_model()
    module.train()
    samples = _tiny_samples(module)
    collate = VLMCollator(module.tokenizer.pad_token_id, "right", module.image_token_id, module.num_image_tokens)
    longest = max(len(s["input_ids"]) for s in samples)
    packed = PackedCollator(collate, 2 * longest)(samples)
    loss, _ = _loss_and_grads(module, packed)
    leaky = {k: v for k, v in packed.items() if k != "position_ids"}
    leaky["labels"] = mask_sample_starts(packed["labels"], packed["position_ids"])
    leaky_loss, _ = _loss_and_grads(module, leaky)
    assert abs(leaky_loss - loss) > 1e-4 * abs(loss)


# ---------------------------------------------------------------------------------------------------- datamodules
def test_llava_datamodule_packs_its_training_rows():
    root = Path(__file__).resolve().parents[1] / "assets"
    module = MultimodalModule(model="tiny", model_overrides={"tokenizer": str(root / "tokenizer")})
    dm = LlavaDataModule(train_path=str(root / "llava" / "llava_tiny.json"), template="chatml", packing=True,
                         max_length=160, batch_size=2)  # fmt: skip
    dm.bind(module.data_contract)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.collate_fn, PackedCollator) and isinstance(loader.sampler.items.sampler, PackingSampler)
    batches = list(loader)
    ids = [i for b in batches for row in b["id"] for i in row]
    assert sorted(ids) == sorted(dm.train_dataset.record(i)["id"] for i in range(len(dm.train_dataset)))
    assert any(len(row) > 1 for b in batches for row in b["id"])
    for b in batches:
        assert b["input_ids"].shape[1] <= 160 and (b["labels"][b["position_ids"] == 0] == -100).all()
        counts = (b["input_ids"] == module.image_token_id).sum(dim=1)
        assert counts.tolist() == (b["image_counts"] * module.num_image_tokens).tolist()


def test_synthetic_datamodule_trains_on_packed_rows(tmp_path, quiet_trainer):
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny")
    dm = SyntheticVQADataModule(train_samples=24, val_samples=4, batch_size=2, packing=96)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, dm)
    batch = next(iter(trainer.train_dataloader))
    assert "position_ids" in batch and batch["input_ids"].shape[1] <= 96 and len(batch["id"][0]) > 1
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])


def test_packed_rows_of_tiled_images_keep_the_per_image_keys():
    """Any-resolution images (several tiles each, different sizes) packed: tiles, sizes and counts stay aligned."""
    root = Path(__file__).resolve().parents[1] / "assets"
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny-llava-next", model_overrides={"tokenizer": str(root / "tokenizer")})
    layout, image_id = module.image_layout, module.image_token_id
    dm = LlavaDataModule(train_path=str(root / "llava" / "llava_tiny.json"), image_folder=str(root / "llava"),
                         template="chatml", packing=True, max_length=400, batch_size=8)  # fmt: skip
    dm.bind(module.data_contract)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert any(len(row) > 1 for row in batch["id"]) and batch["tiles_per_image"].max() > 1
    sizes, tiles = batch["image_sizes"], batch["tiles_per_image"]
    assert (
        batch["pixel_values"].shape[0] == int(tiles.sum()) and len(sizes) == len(tiles) == batch["image_counts"].sum()
    )
    offset = 0
    for r, n in enumerate(batch["image_counts"].tolist()):  # each row: its images' tokens, in sample order
        expected = sum(len(layout.prompt_ids(tuple(s))) for s in sizes[offset : offset + n].tolist())
        assert int((batch["input_ids"][r] == image_id).sum()) == expected
        offset += n
    module.configure_model()
    hidden = module(batch)  # the network takes every tile of every image: no count mismatch
    assert hidden.shape[:2] == batch["input_ids"].shape and torch.isfinite(hidden).all()


def test_packed_rows_of_onevision_samples_are_checked_sample_by_sample():
    """A row holds several samples: OneVision tiles each single-image sample, though a sample with several images is
    read untiled, so the image tokens are checked per sample, never per row."""
    root = Path(__file__).resolve().parents[1] / "assets"
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny-llava-onevision", model_overrides={"tokenizer": str(root / "tokenizer")})
    dm = LlavaDataModule(train_path=str(root / "llava" / "llava_tiny.json"), image_folder=str(root / "llava"),
                         template="chatml", packing=True, max_length=400, batch_size=8)  # fmt: skip
    dm.bind(module.data_contract)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert any(len(row) > 1 for row in batch["id"]) and batch["tiles_per_image"].max() > 1
    module.configure_model()
    hidden = module(batch)  # the network's splice check: every row's image tokens equal its features
    assert hidden.shape[:2] == batch["input_ids"].shape and torch.isfinite(hidden).all()
