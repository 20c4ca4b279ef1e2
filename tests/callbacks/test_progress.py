"""Progress as plain lines when the output is not a terminal."""

from __future__ import annotations

import io

from lightning.pytorch.callbacks import TQDMProgressBar

from lightning_mm.callbacks import ProgressLines
from lightning_mm.callbacks.progress import format_duration
from lightning_mm.commands.trainer import wants_progress_lines
from lightning_mm.data import SyntheticVQADataModule


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_name_epoch_step_loss_and_rates(tiny_module, quiet_trainer):
    progress = ProgressLines(every_n_steps=2)
    progress.stream = out = io.StringIO()
    dm = SyntheticVQADataModule(train_samples=16, val_samples=4, batch_size=4)
    trainer = quiet_trainer(max_steps=3, enable_progress_bar=True, callbacks=[progress], val_check_interval=2)
    trainer.fit(tiny_module, datamodule=dm)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["train", "train", "val", "train", "done"], lines
    first = lines[0]
    assert first.startswith("train  epoch 1  step 1/3 (33%)  train/loss ")  # a line after the first step
    assert " steps/s  " in first and " samples/s  elapsed " in first and " eta " in first
    assert lines[1].startswith("train  epoch 1  step 2/3 (67%)")  # every 2 steps, and before a validation
    assert lines[2].startswith("val    step 2  val/answer_accuracy ") and "val/loss" not in lines[3]
    assert lines[-1].startswith("done   3 steps in ")


def test_stands_in_for_the_bar_only_off_a_terminal():
    assert wants_progress_lines({}, io.StringIO())
    assert not wants_progress_lines({}, _Terminal())
    assert not wants_progress_lines({"enable_progress_bar": False}, io.StringIO())
    assert not wants_progress_lines({"callbacks": [TQDMProgressBar()]}, io.StringIO())


def test_format_duration():
    assert [format_duration(s) for s in (50, 3725, float("inf"))] == ["0:50", "1:02:05", "?"]
