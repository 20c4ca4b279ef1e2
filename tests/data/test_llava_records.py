"""Data files as text: a UTF-8 byte-order mark is accepted; a record that is not UTF-8 is named by file and line, and
skipped (counted once) with ``on_bad_sample="skip"``."""

from __future__ import annotations

import codecs
import json

import pytest

from lightning_mm.data import BadSampleError, read_records

RECORDS = [
    {
        "id": f"r{i}",
        "conversations": [{"from": "human", "value": f"Qu\u00e9 {i}?"}, {"from": "gpt", "value": "S\u00ed."}],
    }
    for i in range(3)
]


def _jsonl(records) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def _json(records) -> bytes:
    return ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n").encode()


@pytest.mark.parametrize(("suffix", "encode"), [(".json", _json), (".jsonl", _jsonl)])
def test_a_byte_order_mark_is_accepted(suffix, encode, make_dataset, tmp_path):
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(codecs.BOM_UTF8 + encode(RECORDS))
    assert [r for _, r in read_records(str(path))] == RECORDS
    ds = make_dataset(path, on_bad_sample="skip")
    assert len(ds) == 3 and not ds.skip_counts and ds.record(0)["id"] == "r0"


@pytest.mark.parametrize(("suffix", "encode", "line"), [(".json", _json, 3), (".jsonl", _jsonl, 2)])
def test_a_record_that_is_not_utf8_is_named_and_skippable(suffix, encode, line, make_dataset, tmp_path):
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(encode(RECORDS).replace("Qu\u00e9 1".encode(), "Qu\u00e9 1".encode("latin-1")))  # one 0xe9 byte
    with pytest.raises(BadSampleError, match=f"{path}:{line}: not UTF-8 text \\(byte 0xe9\\)") as err:
        make_dataset(path)
    assert err.value.reason == "not_utf8"
    ds = make_dataset(path, on_bad_sample="skip")
    assert dict(ds.skip_counts) == {"not_utf8": 1}
    assert [ds.record(i)["id"] for i in range(len(ds))] == ["r0", "r2"]
    assert ds.record(0)["messages"][0]["content"] == "Qu\u00e9 0?"
