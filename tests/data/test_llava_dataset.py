"""LlavaDataset: reading, validation errors that name the sample, skip-and-count, truncation, batches, workers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_mm.callbacks.data_stats import DataStatsCallback
from lightning_mm.data import IGNORE_INDEX, BadSampleError, VLMCollator

LLAVA_DIR = Path(__file__).resolve().parents[1] / "assets" / "llava"

GOOD_TEXT = {"id": "good-text", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hi."}]}

# (reason, bad record or raw line): each breaks one rule that is checked when the file is read
BAD_RECORDS = [
    ("malformed_json", '{"id": "broken", "conversations": [{"from": "human", "value": "Hi"'),
    (
        "unknown_role",
        {"id": "bad-role", "conversations": [{"from": "robot", "value": "Hi"}, {"from": "gpt", "value": "x"}]},
    ),
    (
        "bad_turn_order",
        {
            "id": "two-humans",
            "conversations": [
                {"from": "human", "value": "a"},
                {"from": "human", "value": "b"},
                {"from": "gpt", "value": "c"},
            ],
        },
    ),
    ("bad_turn_order", {"id": "no-answer", "conversations": [{"from": "human", "value": "a"}]}),
    (
        "bad_turn_order",
        {
            "id": "late-system",
            "conversations": [
                {"from": "human", "value": "a"},
                {"from": "system", "value": "s"},
                {"from": "gpt", "value": "c"},
            ],
        },
    ),
    (
        "image_count_mismatch",
        {
            "id": "two-tags-one-image",
            "image": "images/red_circle.png",
            "conversations": [{"from": "human", "value": "<image> <image> ?"}, {"from": "gpt", "value": "x"}],
        },
    ),
    (
        "image_count_mismatch",
        {
            "id": "image-without-tag",
            "image": "images/red_circle.png",
            "conversations": [{"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "x"}],
        },
    ),
    (
        "image_outside_user_turn",
        {
            "id": "tag-in-answer",
            "image": "images/red_circle.png",
            "conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "<image> this"}],
        },
    ),
    ("malformed_record", {"id": "no-conversations", "image": "images/red_circle.png"}),
]

# (reason, image path): records that are valid but whose image fails when the sample is loaded
BAD_IMAGES = [("image_missing", "images/does_not_exist.png"), ("image_unreadable", "images/garbage.png")]


def _image_record(rid: str, image: str) -> dict:
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A shape."}],
    }


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A copy of the asset images plus a file that is not an image."""
    folder = tmp_path / "root"
    (folder / "images").mkdir(parents=True)
    for png in (LLAVA_DIR / "images").glob("*.png"):
        (folder / "images" / png.name).write_bytes(png.read_bytes())
    (folder / "images" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder


def _by_id(ds) -> dict[str, dict]:
    return {s["id"]: s for s in (ds[i] for i in range(len(ds))) if "input_ids" in s}


def test_json_and_jsonl_give_the_same_samples(make_dataset, records):
    a, b = make_dataset(LLAVA_DIR / "llava_tiny.json"), make_dataset(LLAVA_DIR / "llava_tiny.jsonl")
    assert len(a) == len(b) == len(records) == a.num_records
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["id"] == y["id"]
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
        assert (x["pixel_values"] is None) == (y["pixel_values"] is None)
        if x["pixel_values"] is not None:
            assert torch.equal(x["pixel_values"], y["pixel_values"])


def test_where_gives_the_line_of_each_record(make_dataset):
    ds = make_dataset(LLAVA_DIR / "llava_tiny.json")
    lines = (LLAVA_DIR / "llava_tiny.json").read_text().splitlines()
    starts = [n for n, line in enumerate(lines, start=1) if line == "{"]  # each record opens its own line
    assert [ds.where(i) for i in range(len(ds))] == [f"{LLAVA_DIR / 'llava_tiny.json'}:{n}" for n in starts]
    jsonl = make_dataset(LLAVA_DIR / "llava_tiny.jsonl")
    assert jsonl.where(3).endswith("llava_tiny.jsonl:4")


@pytest.mark.parametrize(("reason", "bad"), BAD_RECORDS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_RECORDS)])
def test_bad_record_is_an_error_naming_the_sample(reason, bad, make_dataset, write_jsonl, records):
    path = write_jsonl([*records[:3], bad, *records[3:]])
    with pytest.raises(BadSampleError) as err:
        make_dataset(path)
    assert err.value.reason == reason
    assert f"{path}:4" in str(err.value)  # file and line
    if isinstance(bad, dict):
        assert repr(bad["id"]) in str(err.value)


@pytest.mark.parametrize(("reason", "bad"), BAD_RECORDS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_RECORDS)])
def test_bad_record_is_skipped_and_counted_without_touching_the_others(reason, bad, make_dataset, write_jsonl, records):
    path = write_jsonl([*records[:3], bad, *records[3:], bad])
    ds = make_dataset(path, on_bad_sample="skip")
    assert dict(ds.skip_counts) == {reason: 2}
    assert ds.num_records == len(records) + 2 and len(ds) == len(records)
    clean = _by_id(make_dataset(write_jsonl(records, "clean.jsonl")))
    for rid, sample in _by_id(ds).items():
        assert torch.equal(sample["input_ids"], clean[rid]["input_ids"])
        assert torch.equal(sample["labels"], clean[rid]["labels"])
        assert sample["skipped"] == []


@pytest.mark.parametrize(("reason", "image"), BAD_IMAGES)
def test_unloadable_image_is_an_error_naming_the_sample(reason, image, make_dataset, write_jsonl, image_folder):
    path = write_jsonl([GOOD_TEXT, _image_record("bad-image", image), GOOD_TEXT])
    ds = make_dataset(path, image_folder=str(image_folder))  # images are not opened when the file is read
    assert len(ds) == 3
    ds[0]
    with pytest.raises(BadSampleError) as err:
        ds[1]
    assert err.value.reason == reason
    assert f"{path}:2" in str(err.value) and "'bad-image'" in str(err.value) and image in str(err.value)


@pytest.mark.parametrize(("reason", "image"), BAD_IMAGES)
def test_unloadable_image_is_dropped_and_counted_with_skip(
    reason, image, make_dataset, write_jsonl, image_folder, records
):
    rows = [*records[:2], _image_record("bad-image", image), *records[2:]]
    ds = make_dataset(write_jsonl(rows), image_folder=str(image_folder), on_bad_sample="skip")
    clean = _by_id(make_dataset(write_jsonl(records, "clean.jsonl"), image_folder=str(image_folder)))
    samples = [ds[i] for i in range(len(ds))]
    assert [r for s in samples for r in s["skipped"]] == [reason]
    assert samples[2] == {"id": "bad-image", "skipped": [reason]}  # the bad record yields nothing, no stand-in
    delivered = [s for s in samples if "input_ids" in s]
    assert [s["id"] for s in delivered] == [str(r["id"]) for r in records]  # each good record once
    for s in delivered:
        assert torch.equal(s["labels"], clean[s["id"]]["labels"])
        assert torch.equal(s["input_ids"], clean[s["id"]]["input_ids"])


def test_malformed_json_list_names_line_and_column(make_dataset, tmp_path):
    path = tmp_path / "broken.json"
    good = json.dumps(GOOD_TEXT)
    path.write_text(f'[\n  {good},\n  {{"id": "b", "conversations": [}}\n]\n')
    for mode in ("error", "skip"):  # a broken list cannot be resynchronised: always an error
        with pytest.raises(BadSampleError, match=f"{path}:3:"):
            make_dataset(path, on_bad_sample=mode)


def test_unknown_file_type_and_empty_data_are_errors(make_dataset, tmp_path, write_jsonl):
    (tmp_path / "data.csv").write_text("id\n")
    with pytest.raises(ValueError, match=r"\.json .* or \.jsonl"):
        make_dataset(tmp_path / "data.csv")
    bad = BAD_RECORDS[1][1]
    with pytest.raises(ValueError, match="No usable record"):
        make_dataset(write_jsonl([bad]), on_bad_sample="skip")


def _full(make_dataset, records, rid, template="vicuna_v1"):
    ds = make_dataset(template=template)
    index = next(i for i, r in enumerate(records) if r["id"] == rid)
    return index, ds[index]


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_truncation_inside_an_image_span_drops_and_counts(mode, make_dataset, records, tokenizer):
    index, full = _full(make_dataset, records, "two-images")
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    positions = (full["input_ids"] == image_id).nonzero().flatten().tolist()
    cut = positions[5]  # inside the second image's span
    ds = make_dataset(max_length=cut, on_bad_sample=mode)
    assert ds[index] == {"id": full["id"], "skipped": ["truncated_image_span"]}


def test_truncation_after_the_images_keeps_the_sample(make_dataset, records, tokenizer):
    index, full = _full(make_dataset, records, "multi-turn")
    labels = full["labels"]
    first_answer_end = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    cut = first_answer_end[3] + 5  # past the first answer, before the end
    ds = make_dataset(max_length=cut)
    sample = ds[index]
    assert sample["id"] == "multi-turn" and sample["skipped"] == []
    assert len(sample["input_ids"]) == cut
    assert torch.equal(sample["input_ids"], full["input_ids"][:cut])
    assert torch.equal(sample["labels"], full["labels"][:cut])


def test_truncation_that_leaves_no_target_drops_and_counts(make_dataset, records):
    index, full = _full(make_dataset, records, "text-only")
    first_target = int((full["labels"] != IGNORE_INDEX).nonzero()[0])
    sample = make_dataset(max_length=first_target)[index]
    assert sample == {"id": "text-only", "skipped": ["truncated_no_targets"]}


def test_every_sample_too_long_is_a_clear_error(make_dataset, records):
    ds = make_dataset(max_length=3, max_consecutive_drops=len(records))
    with pytest.raises(RuntimeError, match="records in a row were dropped.*max_length"):
        [ds[i] for i in range(len(ds))]


def test_text_only_and_image_samples_share_a_batch(make_dataset, records, tokenizer):
    ds = make_dataset()
    picks = [
        next(i for i, r in enumerate(records) if r["id"] == rid) for rid in ("text-only", "two-images", "image-last")
    ]
    batch = VLMCollator(tokenizer.pad_token_id, "right", ds.image_token_id, ds.num_image_tokens)([ds[i] for i in picks])
    assert batch["image_counts"].tolist() == [0, 2, 1]
    assert tuple(batch["pixel_values"].shape) == (3, 3, 32, 32)
    assert batch["id"] == ["text-only", "two-images", "image-last"]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape


def test_image_token_inside_the_text_is_caught(make_dataset, write_jsonl, tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_tokens(["<im_patch>"], special_tokens=True)
    patch_id = tok.convert_tokens_to_ids("<im_patch>")
    rec = {
        "id": "sneaky",
        "conversations": [{"from": "human", "value": "a <im_patch> b"}, {"from": "gpt", "value": "x"}],
    }
    ds = make_dataset(write_jsonl([rec]), tok=tok, image_token_id=patch_id)
    with pytest.raises(BadSampleError, match="'sneaky'.*1 image tokens for 0 image"):
        ds[0]


def test_workers_deliver_the_same_batches_with_skip_reasons(make_dataset, write_jsonl, image_folder, records):
    rows = [_image_record("bad-image", "images/does_not_exist.png"), *records]
    ds = make_dataset(write_jsonl(rows), image_folder=str(image_folder), on_bad_sample="skip")
    collate = VLMCollator(0, "right", ds.image_token_id, ds.num_image_tokens)
    serial = list(DataLoader(ds, batch_size=4, collate_fn=collate))
    parallel = list(DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=1))
    assert [b["id"] for b in serial] == [b["id"] for b in parallel]
    assert [r for b in parallel for r in b["skipped"]] == ["image_missing"]
    assert sorted(i for b in parallel for i in b["id"]) == sorted(str(r["id"]) for r in records)
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["labels"], b["labels"])


def test_records_are_stored_compactly_and_decoded_on_access(make_dataset, records):
    ds = make_dataset()
    rec = ds.record(2)
    assert rec["id"] == records[2]["id"]
    assert rec["images"] == [str(LLAVA_DIR / p) for p in records[2]["image"]]
    assert [m["content"] for m in rec["messages"]] == [c["value"] for c in records[2]["conversations"]]
    assert ds._payload.nbytes < len(json.dumps(records)) * 1.1  # one byte buffer, no per-record Python objects


def test_estimated_lengths_follow_the_real_ones(make_dataset, records):
    ds = make_dataset(template="vicuna_v1")
    real = torch.tensor([len(ds[i]["input_ids"]) for i in range(len(ds))], dtype=torch.float)
    est = torch.tensor(ds.lengths, dtype=torch.float)
    assert ds.has_images.tolist() == [bool(r.get("image")) for r in records]
    assert float(((est - real).abs() / real).max()) < 0.25
    order_real, order_est = real.argsort(), est.argsort()
    assert int(order_real[-1]) == int(order_est[-1])  # the longest sample is recognised


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_each_bad_record_once_and_delivers_each_good_record_once(
    workers, make_dataset, tmp_path, write_jsonl, image_folder, records
):
    good = records[:5]
    (tmp_path / "good.json").write_text(json.dumps(good))
    bad = [  # runs of bad records, the last one at the end of the data (the old stand-in wrapped around)
        _image_record("missing-1", "images/does_not_exist.png"),
        _image_record("missing-2", "images/does_not_exist.png"),
        BAD_RECORDS[1][1],  # unknown role: left out when the file is read
        _image_record("unreadable", "images/garbage.png"),
        _image_record("missing-3", "images/does_not_exist.png"),
    ]
    bad_path = write_jsonl(bad, "bad.jsonl")
    ds = make_dataset(
        [str(tmp_path / "good.json"), str(bad_path)], image_folder=str(image_folder), on_bad_sample="skip"
    )
    collate = VLMCollator(0, "right", ds.image_token_id, ds.num_image_tokens)
    stats = DataStatsCallback()
    stats.on_train_epoch_start(None, None)
    ids = []
    for k, batch in enumerate(DataLoader(ds, batch_size=2, collate_fn=collate, num_workers=workers)):
        stats.on_train_batch_end(None, None, None, batch, k)
        ids += batch["id"]
    assert sorted(ids) == sorted(str(r["id"]) for r in good)  # each good record exactly once
    out = stats.stats("train", dataset=ds)
    assert out["skipped"] == 5  # each bad record once
    assert out["skipped/image_missing"] == 3 and out["skipped/image_unreadable"] == 1
    assert out["skipped/unknown_role"] == 1
    assert out["dropped_fraction"] == pytest.approx(0.5)


def test_a_batch_of_dropped_records_is_one_padding_token_with_nothing_supervised(
    make_dataset, write_jsonl, image_folder
):
    rows = [_image_record("missing-1", "images/nope.png"), _image_record("missing-2", "images/nope.png"), GOOD_TEXT]
    ds = make_dataset(write_jsonl(rows), image_folder=str(image_folder), on_bad_sample="skip")
    batches = list(DataLoader(ds, batch_size=2, collate_fn=VLMCollator(0, "right")))
    assert batches[0]["empty"] is True and batches[0]["id"] == []
    assert batches[0]["skipped"] == ["image_missing", "image_missing"]
    assert batches[0]["input_ids"].tolist() == [[0]] and batches[0]["labels"].tolist() == [[IGNORE_INDEX]]
    assert batches[1]["id"] == ["good-text"] and "empty" not in batches[1] and batches[1]["skipped"] == []


def test_records_of_a_json_list_without_a_separator_name_the_line(make_dataset, tmp_path):
    path = tmp_path / "no_comma.json"
    good = json.dumps(GOOD_TEXT)
    path.write_text(f"[\n  {good},\n  {good}\n  {good}\n]\n")
    with pytest.raises(BadSampleError, match=f"{path}:3:.*expected ',' or ']'"):
        make_dataset(path)
    path.write_text(f'{{"records": [{good}]}}')
    with pytest.raises(BadSampleError, match=f"{path}:1:1: malformed JSON: a .json data file must hold a list"):
        make_dataset(path)
