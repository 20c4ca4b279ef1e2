"""The batch measures given to Lightning's ThroughputMonitor, and the supervised-token rate."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import SupervisedTokenThroughput, ValidationSamples
from lightning_mm.callbacks.data_stats import DataStatsCallback
from lightning_mm.callbacks.throughput import batch_size, real_tokens, supervised_tokens
from lightning_mm.data import LlavaDataModule

ASSETS = Path(__file__).resolve().parents[1] / "assets"

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


@pytest.mark.slow
def test_micro_batches_whose_every_record_was_dropped_run_with_the_recipe_callbacks(tmp_path, quiet_trainer):
    """max_length below one image's tokens drops every image record: the image micro-batches (training and
    validation, grouped by modality) are empty, and every step and callback of the recipes runs through them."""
    image = {"image": "images/red_circle.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}]}
    image["conversations"].append({"from": "gpt", "value": "A red circle."})
    text = {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Yes."}]}
    rows = [{"id": f"image-{i}", **image} for i in range(4)] + [{"id": f"text-{i}", **text} for i in range(4)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    module = MultimodalModule(model="tiny", model_overrides={"tokenizer": str(ASSETS / "tokenizer")}, max_new_tokens=4)
    assert module.num_image_tokens == 16
    data = LlavaDataModule(
        train_path=str(path), val_path=str(path), image_folder=str(ASSETS / "llava"), template="plain", max_length=15
    )
    data.batch_size = data.val_batch_size = 4  # one batch of image records (all dropped), one of text records
    callbacks = [
        ThroughputMonitor(batch_size_fn=batch_size, length_fn=real_tokens, window_size=2),
        SupervisedTokenThroughput(window_size=2),
        DataStatsCallback(),
        ValidationSamples(num_samples=2),
    ]
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = quiet_trainer(
        max_epochs=1, log_every_n_steps=1, logger=logger, callbacks=callbacks, num_sanity_val_steps=0
    )
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2  # 1 empty + 1 text batch
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["data/train/skipped/truncated_image_span"] == 4 and metrics["data/train/dropped_fraction"] == 0.5
    assert metrics["data/val/skipped/truncated_image_span"] == 4
    assert metrics["train/device/supervised_tokens_per_sec"] >= 0
    predictions = [row for rows in trainer.predict(module, datamodule=data) for row in rows]
    assert [p["id"] for p in predictions] == [f"text-{i}" for i in range(4)]
