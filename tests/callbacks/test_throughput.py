"""The batch measures given to Lightning's ThroughputMonitor, and the supervised-token rate."""

import pytest
import torch

from lightning_mm.callbacks import SupervisedTokenThroughput
from lightning_mm.callbacks.throughput import batch_size, real_tokens, supervised_tokens

X = -100


def test_batch_measures_count_samples_real_tokens_and_loss_carrying_targets():
    batch = {
        "input_ids": torch.zeros(2, 5, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        # targets are shifted: the label at position 0 is never a target
        "labels": torch.tensor([[7, X, 3, 4, X], [X, 5, 6, X, X]]),
    }
    assert batch_size(batch) == 2
    assert real_tokens(batch) == 8
    assert supervised_tokens(batch) == 4  # 3, 4 and 5, 6; the 7 at position 0 predicts nothing
    assert supervised_tokens({"input_ids": batch["input_ids"]}) == 0


def test_window_must_hold_two_batches():
    with pytest.raises(ValueError, match="window_size must be at least 2"):
        SupervisedTokenThroughput(window_size=1)
