"""LLaVA records may carry reference answers (``answers``) and a ``category``; both reach the batch."""

from __future__ import annotations

import copy

import pytest
from torch.utils.data import DataLoader

from lightning_mm.data import BadSampleError, VLMCollator

TEN = ["2", "2", "two", "2", "3", "2", "2", "2", "2", "2"]


def test_answers_and_category_reach_the_batch(make_dataset, write_jsonl, records, tokenizer):
    rows = copy.deepcopy(records[:3])
    rows[0]["answers"], rows[0]["category"] = TEN, "count"
    rows[2]["category"] = "compare"
    ds = make_dataset(write_jsonl(rows))
    assert ds[0]["answers"] == TEN and ds[0]["category"] == "count"
    assert ds[1]["answers"] is None and ds[1]["category"] is None
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=VLMCollator(tokenizer.pad_token_id))))
    assert batch["answers"] == [TEN, None, None]
    assert batch["category"] == ["count", None, "compare"]
    assert make_dataset(write_jsonl(rows), generation=True)[0]["answers"] == TEN  # prediction prompts keep them


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("answers", "2", "'answers' must be a non-empty list of strings"),
        ("answers", [], "'answers' must be a non-empty list of strings"),
        ("answers", ["2", 3], "'answers' must be a non-empty list of strings"),
        ("category", 7, "'category' must be a string"),
    ],
)
def test_malformed_answers_or_category_name_the_record(field, value, message, make_dataset, write_jsonl, records):
    rows = copy.deepcopy(records[:3])
    rows[1][field] = value
    path = write_jsonl(rows)
    with pytest.raises(BadSampleError, match=message) as err:
        make_dataset(path)
    assert f"{path}:2" in str(err.value) and repr(rows[1]["id"]) in str(err.value)
    assert err.value.reason == "malformed_record"
    assert len(make_dataset(path, on_bad_sample="skip")) == 2  # skippable like any malformed record
