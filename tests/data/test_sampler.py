"""LengthGroupedSampler: a permutation whose batches have similar lengths, per modality, rank-aware, per epoch."""

from __future__ import annotations

import numpy as np
import pytest
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from lightning_mm.data import LengthGroupedSampler


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 2000, size=n)


@pytest.mark.parametrize(("n", "batch", "world"), [(1000, 8, 1), (999, 8, 2), (13, 4, 1), (3, 8, 1), (0, 2, 1)])
@pytest.mark.parametrize("with_modalities", [False, True])
def test_order_is_a_permutation(n, batch, world, with_modalities):
    modalities = (np.arange(n) % 3 == 0) if with_modalities else None
    sampler = LengthGroupedSampler(_lengths(n), batch, world_size=world, modalities=modalities)
    order = list(sampler)
    assert sorted(order) == list(range(n)) and len(sampler) == n


def test_groups_have_similar_lengths():
    lengths = _lengths(4000)
    group = 16
    order = LengthGroupedSampler(lengths, group).order()
    spread = np.mean([np.ptp(lengths[order[i : i + group]]) for i in range(0, 4000, group)])
    shuffled = np.random.default_rng(1).permutation(4000)
    random_spread = np.mean([np.ptp(lengths[shuffled[i : i + group]]) for i in range(0, 4000, group)])
    assert spread < 0.2 * random_spread


def test_longest_sample_comes_first():
    lengths = _lengths(500)
    order = LengthGroupedSampler(lengths, 8, seed=3).order()
    assert int(np.argmax(lengths)) in order[:8].tolist()


def test_order_depends_on_seed_and_epoch_only():
    lengths = _lengths(300)
    a, b = LengthGroupedSampler(lengths, 4, seed=7), LengthGroupedSampler(lengths, 4, seed=7)
    assert np.array_equal(a.order(), b.order())
    first = a.order()
    a.set_epoch(1)
    assert not np.array_equal(first, a.order())
    assert not np.array_equal(first, LengthGroupedSampler(lengths, 4, seed=8).order())


def test_modalities_are_kept_apart():
    n, group = 1000, 8
    has_image = np.random.default_rng(2).random(n) < 0.7
    order = LengthGroupedSampler(_lengths(n), group, modalities=has_image).order()
    batches = [order[i : i + group] for i in range(0, n, group)]
    mixed = [b for b in batches if 0 < has_image[b].sum() < len(b)]
    assert len(mixed) <= 2  # only the leftovers of each modality may share a batch


def test_each_rank_gets_its_batch_from_one_group():
    """Under DDP, Lightning's wrapper hands rank r the indices r, r + world, ...; each micro-batch stays in a group."""
    lengths = _lengths(640)
    batch, world = 4, 2
    sampler = LengthGroupedSampler(lengths, batch, world_size=world)
    order = sampler.order()
    group = batch * world
    for rank in range(world):
        wrapped = DistributedSamplerWrapper(sampler, num_replicas=world, rank=rank, shuffle=False)
        wrapped.set_epoch(0)
        mine = list(wrapped)
        for k in range(len(mine) // batch):
            assert set(mine[k * batch : (k + 1) * batch]) <= set(order[k * group : (k + 1) * group].tolist())
    wrapped.set_epoch(5)  # the wrapper forwards the epoch
    assert sampler.epoch == 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="modalities for"):
        LengthGroupedSampler([1, 2, 3], 2, modalities=[True])
    with pytest.raises(ValueError, match=">= 1"):
        LengthGroupedSampler([1, 2, 3], 0)
