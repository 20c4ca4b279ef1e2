"""LlavaDataModule + DataStatsCallback under a Trainer, and the llava_tiny recipe through ``lightning-mm fit``."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_mm import MultimodalModule
from lightning_mm.callbacks.data_stats import DataStatsCallback
from lightning_mm.cli import main
from lightning_mm.data import IGNORE_INDEX, LengthGroupedSampler, LlavaDataModule, ShuffleSampler
from lightning_mm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets"
LLAVA_DIR = ASSETS / "llava"
OVERRIDES = {"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def asset_module() -> MultimodalModule:
    return MultimodalModule(model="tiny", model_overrides=OVERRIDES)


def test_datamodule_binds_to_the_model_and_groups_by_length(asset_module):
    dm = LlavaDataModule(train_path=str(LLAVA_DIR / "llava_tiny.json"), template="chatml", batch_size=4)
    m = asset_module
    dm.bind(m.data_contract)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler.items.sampler, LengthGroupedSampler)  # the order the plans cut
    m.configure_model()
    for batch in loader:
        n_tokens = int((batch["input_ids"] == m.image_token_id).sum())
        if batch["pixel_values"] is None:
            assert n_tokens == 0
            continue
        assert batch["pixel_values"].dtype == torch.uint8  # normalised by the tower, on its device
        with torch.no_grad():
            feats = m.network.projector(m.network.vision(batch["pixel_values"]))  # (N_img, L, D)
        assert n_tokens == feats.shape[0] * feats.shape[1]  # one image token per feature row the tower emits
    assert dm.val_dataloader() == []
    dm.group_by_length = False
    assert isinstance(dm.train_dataloader().sampler.items.sampler, ShuffleSampler)


@pytest.mark.parametrize("setting", ["grouped", "shuffled", "packed", "val"])
def test_ranks_split_the_records_without_repeating_one(setting, asset_module, tmp_path):
    """7 records over 2 ranks x 2 per batch: every record once and the same steps on both ranks (before, Lightning's
    distributed sampler repeated one record to make 8)."""
    rows = json.loads((LLAVA_DIR / "llava_tiny.json").read_text())[:7]
    path = tmp_path / "seven.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen, steps = [], []
    for rank in range(2):
        dm = LlavaDataModule(train_path=str(path), val_path=str(path), image_folder=str(LLAVA_DIR), batch_size=2,
                             group_by_length=setting != "shuffled", packing=setting == "packed", max_length=160)  # fmt: skip
        dm._rank = lambda rank=rank: (rank, 2)
        dm.bind(asset_module.data_contract)
        dm.setup("fit")
        loader = dm.val_dataloader() if setting == "val" else dm.train_dataloader()
        loader.sampler.set_epoch(1)
        ids = [[i for x in b["id"] for i in (x if isinstance(x, list) else [x])] for b in loader]
        steps.append(len(ids))
        seen += [str(i) for b in ids for i in b]
    assert steps[0] == steps[1] == len(loader)
    assert sorted(seen) == sorted(str(r["id"]) for r in rows)


def test_fit_logs_dropped_fraction_skip_counts_and_supervised_fraction(tmp_path, records_with_bad_rows, quiet_trainer):
    train_path, n_records = records_with_bad_rows
    dm = LlavaDataModule(
        train_path=str(train_path),
        val_path=str(LLAVA_DIR / "llava_tiny.jsonl"),
        image_folder=str(LLAVA_DIR),
        on_bad_sample="skip",
        batch_size=4,
        max_length=256,
    )
    model = MultimodalModule(model="tiny", model_overrides=OVERRIDES)
    trainer = quiet_trainer(
        max_epochs=1, logger=CSVLogger(tmp_path), callbacks=[DataStatsCallback()], num_sanity_val_steps=0
    )
    trainer.fit(model, datamodule=dm)
    assert dm.train_dataset.template.name == "vicuna_v1"  # the model's own template
    m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("data/")}
    assert m["data/train/skipped/unknown_role"] == 1 and m["data/train/skipped/image_missing"] == 1
    assert m["data/train/skipped"] == 2
    assert m["data/train/dropped_fraction"] == pytest.approx(2 / n_records)
    ds = dm.train_dataset  # every index is drawn once per epoch; a dropped one delivers nothing
    samples = [s for s in (ds[i] for i in range(len(ds))) if "input_ids" in s]
    supervised = sum(int((s["labels"] != IGNORE_INDEX).sum()) for s in samples)
    tokens = sum(len(s["input_ids"]) for s in samples)
    assert m["data/train/supervised_fraction"] == pytest.approx(supervised / tokens)
    assert m["data/val/skipped"] == 0 and m["data/val/dropped_fraction"] == 0
    assert 0 < m["data/val/supervised_fraction"] < 1
    logged = _read_csv(Path(trainer.logger.log_dir) / "metrics.csv")
    assert any(row.get("data/train/dropped_fraction") for row in logged)

    predictions = [p for batch in trainer.predict(model, datamodule=dm) for p in batch]
    assert [p["id"] for p in predictions] == [
        str(r["id"]) for r in json.loads((LLAVA_DIR / "llava_tiny.json").read_text())
    ]
    assert all(isinstance(p["prediction"], str) and p["answer"] for p in predictions)


@pytest.fixture
def records_with_bad_rows(tmp_path) -> tuple[Path, int]:
    """The asset records plus one record with an unknown role and one whose image is missing."""
    rows = json.loads((LLAVA_DIR / "llava_tiny.json").read_text())
    bad_role = {"id": "bad-role", "conversations": [{"from": "bot", "value": "a"}, {"from": "gpt", "value": "b"}]}
    missing = {
        "id": "missing-image",
        "image": "images/nope.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Nothing."}],
    }
    rows = [*rows[:2], bad_role, *rows[2:5], missing, *rows[5:]]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, len(rows)


def test_recipe_trains_the_tiny_model_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe's paths are relative to the repository root
    rc = main(
        [
            "fit",
            "--config",
            "recipes/llava_tiny.yaml",
            "--trainer.max_epochs=4",
            "--trainer.check_val_every_n_epoch=4",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.save_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert rc == 0
    logged = _read_csv(next(tmp_path.rglob("metrics.csv")))
    losses = [float(r["train/loss"]) for r in logged if r.get("train/loss")]
    assert len(losses) == 8  # 4 epochs x 2 batches of 4 records
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[4:]) < 0.8 * losses[0]  # it learns (batches differ in difficulty: compare the best of the end)
    assert any(r.get("data/train/supervised_fraction") for r in logged)
    assert list(tmp_path.rglob("last.ckpt"))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"train_path": "nope/train.json"}, "train_path: 'nope/train.json' does not exist"),
        ({"val_path": ["tests/assets/llava/llava_tiny.jsonl", "nope.jsonl"]}, "val_path: 'nope.jsonl' does not exist"),
        ({"predict_path": "tests/assets/llava"}, "predict_path: 'tests/assets/llava' is a folder, not a data file"),
        ({"image_folder": "tests/assets/images"}, "image_folder: 'tests/assets/images' does not exist"),
        (
            {"image_folder": "tests/assets/llava/llava_tiny.json"},
            "image_folder: 'tests/assets/llava/llava_tiny.json' is",
        ),
    ],
)
def test_missing_paths_are_config_errors_when_the_datamodule_is_made(kwargs, named, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=re.escape(f"LlavaDataModule {named}")):
        LlavaDataModule(**{"train_path": "tests/assets/llava/llava_tiny.json", **kwargs})


def test_the_cli_names_a_missing_image_folder_before_building_the_model(monkeypatch, capsys, training_steps):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(MultimodalModule, "configure_model", lambda self: pytest.fail("the model was built"))
    rc = main(["fit", "--config", "recipes/llava_tiny.yaml", "--data.init_args.image_folder=data/imagez"])
    err = capsys.readouterr().err
    assert rc == 2 and "LlavaDataModule image_folder: 'data/imagez' does not exist" in err
    assert len(err.strip().splitlines()) < 10 and not training_steps
