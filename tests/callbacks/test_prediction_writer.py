"""PredictionWriter: ``lightning-mm predict`` writes one JSON line per held-out sample, in order, on any number of ranks."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
import torch

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import PredictionWriter
from lightning_mm.callbacks.prediction_writer import read_predictions
from lightning_mm.cli import main
from lightning_mm.data import LlavaDataModule, SyntheticVQADataset, VLMCollator, decode_prompt
from lightning_mm.data.llava import parse_record

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets"
WORKER = Path(__file__).with_name("predict_worker.py")


def _wrote(stdout: str) -> Path:
    match = re.search(r"^Wrote (\d+) predictions to (.+)$", stdout, flags=re.M)
    assert match, f"predict printed no 'Wrote ... predictions to ...' line:\n{stdout[-2000:]}"
    return Path(match.group(2))


def _predict(quiet_trainer, module: MultimodalModule, dm: LlavaDataModule, out: Path) -> list[dict]:
    """``trainer.predict`` with a :class:`PredictionWriter` to ``out``; the rows it wrote."""
    trainer = quiet_trainer(callbacks=[PredictionWriter(output_path=str(out))])
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return read_predictions(out)


def test_predict_after_the_quickstart_writes_the_held_out_samples_and_agrees_with_teacher_forcing(
    quickstart_run, capsys
):
    capsys.readouterr()
    assert main(["predict", *quickstart_run["args"], f"--ckpt_path={quickstart_run['ckpt']}"]) == 0
    out = capsys.readouterr().out
    path = _wrote(out)
    # default path: the predict run's log directory under the recipe's logger save_dir
    assert path.parent.parent == quickstart_run["root"] / "quickstart" and path.name == "predictions.jsonl"
    rows = read_predictions(path)
    for row in rows[:3]:  # the first rows are printed
        assert "  " + json.dumps(row, ensure_ascii=False) in out

    module = MultimodalModule.load_from_checkpoint(quickstart_run["ckpt"], map_location="cpu").eval()
    tok = module.tokenizer
    held_out = {
        generation: SyntheticVQADataset(
            tok,
            module.num_image_tokens,
            module.image_data_config,
            module.image_token_id,
            num_samples=32,  # SyntheticVQADataModule's predict_samples
            seed=2,  # its prediction seed (seed + 2)
            question_types=["color"],
            generation=generation,
        )
        for generation in (True, False)
    }
    assert len(rows) == 32
    for i, row in enumerate(rows):
        sample = held_out[True][i]
        assert row["index"] == i and row["id"] == sample["id"] and row["answer"] == sample["answer"]
        assert row["images"] == [i] and row["category"] == "color"
        assert row["prompt"] == decode_prompt(tok, sample["input_ids"].tolist(), module.image_token_id)
        assert row["prompt"].count("<image>") == 1 and row["prompt"].rstrip().endswith("assistant")

    # teacher-forced exact match of the same samples (answer + end-of-turn all argmax-correct given the true prefix)
    collate = VLMCollator(tok.pad_token_id, "right", module.image_token_id, module.num_image_tokens)
    batch = collate([held_out[False][i] for i in range(32)])
    with torch.no_grad():
        correct = module.answer_correct(module(batch), batch["labels"]).tolist()
    generated = [row["prediction"] == row["answer"] for row in rows]
    assert generated == correct
    assert any(correct), "the short run learnt nothing: the comparison would be vacuous"


def test_llava_rows_hold_the_conversation_up_to_the_last_answer_and_that_answer(tmp_path, quiet_trainer):
    data_file = ASSETS / "llava" / "llava_tiny.jsonl"
    overrides = {"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"}
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", model_overrides=overrides, max_new_tokens=2)
    dm = LlavaDataModule(train_path=str(data_file), val_path=str(data_file), val_batch_size=3)
    out = tmp_path / "sub" / "preds.jsonl"
    rows = _predict(quiet_trainer, module, dm, out)
    lines = [json.loads(line) for line in data_file.read_text().splitlines() if line.strip()]
    assert [r["index"] for r in rows] == list(range(len(lines)))
    for row, raw in zip(rows, lines, strict=True):
        rid, images, messages = parse_record(raw, "asset")
        assert row["id"] == rid
        assert row["answer"] == messages[-1]["content"]
        assert row["images"] == [os.path.join(str(data_file.parent), p) for p in images]
        assert row["prompt"].count("<image>") == len(images)
        assert row["prompt"].rstrip().endswith("ASSISTANT:")
        position = 0  # every earlier turn appears, in order
        for message in messages[:-1]:
            for piece in filter(None, (p.strip() for p in message["content"].split("<image>"))):
                found = row["prompt"].find(piece, position)
                assert found >= 0, (piece, row["prompt"])
                position = found + len(piece)
        assert messages[-1]["content"] not in row["prompt"]
        assert isinstance(row["prediction"], str)


def test_rows_that_do_not_match_the_batch_are_an_error():
    writer = PredictionWriter(output_path="unused.jsonl")
    with pytest.raises(RuntimeError, match="one row"):
        writer.write_on_batch_end(None, None, [{"id": "a"}], [0, 1], None, 0, 0)


@pytest.mark.distributed
def test_two_ddp_ranks_write_one_file_in_the_order_of_the_data(tmp_path, run_python):
    ddp_file = tmp_path / "ddp.jsonl"
    proc = run_python(str(WORKER), str(ddp_file), "2", cwd=tmp_path, timeout=180)
    assert proc.stdout.count("Wrote 11 predictions") == 1  # rank 0 only

    spec = importlib.util.spec_from_file_location("predict_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    single_file = tmp_path / "single.jsonl"
    worker.predict(str(single_file), 1)

    ddp, single = read_predictions(ddp_file), read_predictions(single_file)
    assert [r["index"] for r in ddp] == list(range(worker.NUM_SAMPLES))
    assert ddp == single
    assert [r["id"] for r in ddp] == [f"synthetic-2-{i}" for i in range(worker.NUM_SAMPLES)]


def test_rows_keep_their_dataset_index_when_records_are_dropped(tmp_path, quiet_trainer):
    lines = (ASSETS / "llava" / "llava_tiny.jsonl").read_text().splitlines()
    missing = {
        "id": "missing-image",
        "image": "images/nope.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Nothing."}],
    }
    data_file = tmp_path / "data.jsonl"
    data_file.write_text("\n".join([lines[0], json.dumps(missing), *lines[1:3]]) + "\n")
    overrides = {"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"}
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", model_overrides=overrides, max_new_tokens=2)
    dm = LlavaDataModule(
        train_path=str(data_file),
        val_path=str(data_file),
        image_folder=str(ASSETS / "llava"),
        on_bad_sample="skip",
        val_batch_size=2,
    )
    out = tmp_path / "preds.jsonl"
    rows = _predict(quiet_trainer, module, dm, out)
    ids = [str(json.loads(line)["id"]) for line in [lines[0], json.dumps(missing), *lines[1:3]]]
    assert [r["id"] for r in rows] == [i for i in ids if i != "missing-image"]
    assert [r["index"] for r in rows] == [ids.index(r["id"]) for r in rows] == [0, 2, 3]


def test_rows_are_matched_to_their_records_by_position_when_ids_repeat(tmp_path, quiet_trainer):
    """Before: with a dropped record in the batch, rows were matched by id, and records sharing one all got the index
    of the last of them (two rows with index 3 here)."""
    records = [json.loads(line) for line in (ASSETS / "llava" / "llava_tiny.jsonl").read_text().splitlines()[:3]]
    missing = {
        "image": "images/nope.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Nothing."}],
    }
    records = [records[0], missing, records[1], records[2]]
    for record in records:
        record["id"] = "same"
    data_file = tmp_path / "data.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    overrides = {"tokenizer": str(ASSETS / "tokenizer"), "template": "vicuna_v1"}
    torch.manual_seed(0)
    module = MultimodalModule(model="tiny", model_overrides=overrides, max_new_tokens=1)
    dm = LlavaDataModule(
        train_path=str(data_file),
        val_path=str(data_file),
        image_folder=str(ASSETS / "llava"),
        on_bad_sample="skip",
        val_batch_size=4,
    )
    rows = _predict(quiet_trainer, module, dm, tmp_path / "preds.jsonl")
    assert [r["index"] for r in rows] == [0, 2, 3]
    for row in rows:
        record = records[row["index"]]
        assert row["answer"] == record["conversations"][-1]["value"]
        images = record["image"] if isinstance(record["image"], list) else [record["image"]]
        assert row["images"] == [str(ASSETS / "llava" / p) for p in images]
