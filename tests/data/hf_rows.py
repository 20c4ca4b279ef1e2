"""The committed LLaVA records as ``datasets`` rows in each conversation shape, images embedded as bytes."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

LLAVA_DIR = Path(__file__).resolve().parents[1] / "assets" / "llava"
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def llava_records() -> list[dict]:
    return json.loads((LLAVA_DIR / "llava_tiny.json").read_text())


def _image_bytes(record: dict) -> list[dict]:
    image = record.get("image")
    paths = [] if image is None else [image] if isinstance(image, str) else image
    return [{"bytes": (LLAVA_DIR / p).read_bytes(), "path": None} for p in paths]


def _parts(text: str) -> list[dict]:
    """``"<image>\\nWhat?"`` as content parts (image parts where the placeholders stand)."""
    parts = []
    for k, piece in enumerate(text.split("<image>")):
        if k:
            parts.append({"type": "image", "text": None})
        piece = piece.strip("\n") if k or piece.endswith("\n") else piece
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def rows(shape: str, records: list[dict] | None = None) -> dict[str, list]:
    """Columns of ``datasets.Dataset.from_dict`` for the records in ``shape`` (``llava``, ``messages``,
    ``cauldron``; the_cauldron has no system turn and puts the images first, so only such records fit it)."""
    records = llava_records() if records is None else records
    cols: dict[str, list] = {"id": [], "images": []}
    for r in records:
        cols["id"].append(str(r["id"]))
        cols["images"].append(_image_bytes(r))
        turns = r["conversations"]
        if shape == "llava":
            cols.setdefault("conversations", []).append(turns)
        elif shape == "messages":
            msgs = [{"role": ROLES[t["from"]], "content": _parts(t["value"])} for t in turns]
            cols.setdefault("messages", []).append(msgs)
        else:
            pairs = [
                {"user": turns[i]["value"].replace("<image>\n", ""), "assistant": turns[i + 1]["value"]}
                for i in range(0, len(turns), 2)
            ]
            cols.setdefault("texts", []).append(pairs)
    return cols


def cauldron_fits(record: dict) -> bool:
    """Whether the_cauldron's shape holds the record: no system turn, images only at the start of the first turn."""
    turns = record["conversations"]
    first = turns[0]["value"]
    n = len(_image_bytes(record))
    return (
        turns[0]["from"] != "system"
        and first.startswith("<image>\n" * n)
        and "<image>" not in first[len("<image>\n") * n :]
        and all("<image>" not in t["value"] for t in turns[1:])
    )


def dataset(shape: str, records: list[dict] | None = None) -> datasets.Dataset:
    """A ``datasets.Dataset`` of the records in ``shape``, images as an ``Image`` list column (bytes)."""
    cols = rows(shape, records)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            **(
                {
                    k: datasets.Dataset.from_dict({k: v}).features[k]
                    for k, v in cols.items()
                    if k not in ("id", "images")
                }
            ),
        }
    )
    return datasets.Dataset.from_dict(cols, features=features)


def numbered(n: int, shape: str = "messages") -> datasets.Dataset:
    """``n`` text-only records ``r0, r1, ...`` of varied length (for counting records, without images)."""
    records = [
        {
            "id": f"r{i}",
            "conversations": [
                {"from": "human", "value": "question " * (1 + i % 7) + str(i)},
                {"from": "gpt", "value": "answer " * (1 + i % 5)},
            ],
        }
        for i in range(n)
    ]
    return dataset(shape, records)
