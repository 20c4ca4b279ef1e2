import pathlib

import pytest

from lightning_mm import MultimodalModule
from lightning_mm.cli import main


def test_zoo_lists_tiny(capsys):
    assert main(["zoo", "tiny*"]) == 0  # a pattern: only the tiny rows are computed (the whole zoo takes ~20 s)
    assert "tiny" in capsys.readouterr().out


def test_fit_from_quickstart_recipe_fast_dev_run(tmp_path, monkeypatch, training_steps, capsys):
    monkeypatch.chdir(tmp_path)

    recipe = pathlib.Path(__file__).parents[1] / "recipes" / "quickstart.yaml"
    rc = main(
        [
            "fit",
            "--config",
            str(recipe),
            "--trainer.fast_dev_run=2",
            "--trainer.accelerator=cpu",
            "--data.init_args.train_samples=64",
            "--data.init_args.val_samples=16",
        ]
    )
    assert rc == 0
    assert len(training_steps) == 2 and all(type(m) is MultimodalModule for m in training_steps)  # fast_dev_run=2
    # stdout is not a terminal here: progress lines stand in for the recipe's progress bar
    out = capsys.readouterr().out
    assert "train  epoch 1/1  step 1/2 (50%)  train/loss " in out and "done   2 steps in " in out


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown model 'tinyy'"):
        MultimodalModule(model="tinyy")
