"""Reading and validating LLaVA-format records (``.json`` list or ``.jsonl``), with errors naming file and line, and
the reasons a record is skipped or dropped."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import Any

from lightning_mm.data.segments import IMAGE_PLACEHOLDER, Message

__all__ = [
    "BAD_INPUT_REASONS",
    "DROP_REASONS",
    "ROLES",
    "BadSampleError",
    "SampleDropped",
    "evaluation_fields",
    "parse_record",
    "read_records",
]

#: Reasons a record is bad input: an error by default, skipped and counted with ``on_bad_sample="skip"``.
BAD_INPUT_REASONS = (
    "malformed_json",
    "malformed_record",
    "unknown_role",
    "bad_turn_order",
    "image_count_mismatch",
    "image_outside_user_turn",
    "image_missing",
    "image_unreadable",
    "image_outside_folder",
    "not_utf8",
)

#: Reasons a valid sample is dropped (always, and counted): it does not fit ``max_length``.
DROP_REASONS = ("truncated_image_span", "truncated_no_targets", "prompt_too_long")

#: LLaVA role names -> chat roles.
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

_LIST_START = re.compile(r"\s*\[\s*")
_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, as ``surrogateescape`` decoding keeps them
_SEPARATOR = re.compile(r"\s*(?:(,)|\])\s*")  # between records: a comma, or the end of the list


class BadSampleError(ValueError):
    """A record that cannot be turned into a correct sample.

    Attributes:
        reason: One of :data:`BAD_INPUT_REASONS`.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SampleDropped(Exception):
    """A valid sample that does not fit ``max_length`` (reason in :data:`DROP_REASONS`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _not_utf8(path: str, line: int, bad: re.Match | UnicodeDecodeError) -> BadSampleError:
    """The error of a line holding bytes that are not UTF-8 (``bad``: where the first one is)."""
    if isinstance(bad, UnicodeDecodeError):
        byte = bad.object[bad.start]
    else:
        byte = ord(bad.group()) - 0xDC00  # surrogateescape keeps byte b as U+DC00 + b
    return BadSampleError(
        "not_utf8", f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x}); data files must be UTF-8 encoded"
    )


def _iter_json_list(path: str) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` of each element of a JSON list, decoded one by one with ``json.JSONDecoder.raw_decode``.

    A record holding bytes that are not UTF-8 is yielded as a :class:`BadSampleError` (``not_utf8``) instead.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text, dirty = data.decode("utf-8-sig"), False  # a leading byte-order mark is dropped
    except UnicodeDecodeError:
        text, dirty = data.decode("utf-8-sig", errors="surrogateescape"), True
    decoder = json.JSONDecoder()
    line, counted = 1, 0
    try:
        start = _LIST_START.match(text)
        if start is None:
            raise json.JSONDecodeError(
                "a .json data file must hold a list of records", text, len(text) - len(text.lstrip())
            )
        pos = start.end()
        if text.startswith("]", pos):
            return
        while True:
            line += text.count("\n", counted, pos)  # line of the record's first character
            counted = pos
            record, end = decoder.raw_decode(text, pos)
            bad = _UNDECODED.search(text, pos, end) if dirty else None
            yield line, record if bad is None else _not_utf8(path, line + text.count("\n", pos, bad.start()), bad)
            sep = _SEPARATOR.match(text, end)
            if sep is None:
                raise json.JSONDecodeError("expected ',' or ']' after a record", text, end)
            if sep.group(1) is None:
                return
            pos = sep.end()
    except json.JSONDecodeError as e:
        where = f"{path}:{e.lineno}:{e.colno}"
        bad = _UNDECODED.search(text) if dirty else None
        if bad is not None and bad.start() <= e.pos:  # the list cannot be read past the undecodable bytes
            raise _not_utf8(path, 1 + text.count("\n", 0, bad.start()), bad) from None
        raise BadSampleError(
            "malformed_json", f"{where}: malformed JSON: {e.msg} (a malformed .json list cannot be skipped; use .jsonl)"
        ) from None


def read_records(path: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, record)`` from a ``.json`` list or a ``.jsonl`` file.

    Files are UTF-8, with or without a byte-order mark. A malformed line of a ``.jsonl`` file, or a record holding
    bytes that are not UTF-8, is yielded as a :class:`BadSampleError` in place of the record (naming file and line),
    so the caller may skip it; a malformed ``.json`` list raises.
    """
    if path.endswith(".jsonl"):
        with open(path, "rb") as f:
            for line, raw in enumerate(f, start=1):
                if line == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield line, _not_utf8(path, line, e)
                    continue
                if not text.strip():
                    continue
                try:
                    yield line, json.loads(text)
                except json.JSONDecodeError as e:
                    yield line, BadSampleError("malformed_json", f"{path}:{line}: malformed JSON line: {e.msg}")
    elif path.endswith(".json"):
        yield from _iter_json_list(path)
    else:
        raise ValueError(f"{path}: LLaVA data files are .json (a list of records) or .jsonl (one record per line)")


def parse_record(raw: Any, where: str) -> tuple[str, list[str], list[Message]]:
    """Validate one LLaVA record and return ``(id, image paths, messages)``.

    Roles map ``human`` -> ``user`` and ``gpt`` -> ``assistant`` (``user``/``assistant``/``system`` are accepted as
    is). The conversation is an optional leading system turn, then user/assistant turns alternating, starting with a
    user turn and ending with an answer. ``<image>`` may stand anywhere in user turns, once per image.

    Args:
        raw: The decoded JSON record.
        where: ``file:line``, for error messages.

    Raises:
        BadSampleError: naming ``where`` and the record id.
    """
    if not isinstance(raw, dict):
        raise BadSampleError("malformed_record", f"{where}: a record must be a JSON object, got {type(raw).__name__}")
    rid = str(raw["id"]) if raw.get("id") is not None else where
    at = f"{where}: record {rid!r}"
    images = raw.get("image")
    images = [] if images is None else [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise BadSampleError("malformed_record", f"{at}: 'image' must be a path or a list of paths, got {images!r}")
    convs = raw.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise BadSampleError("malformed_record", f"{at}: 'conversations' must be a non-empty list")
    messages: list[Message] = []
    for k, turn in enumerate(convs):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise BadSampleError("malformed_record", f"{at}: turn {k} must be {{'from': ..., 'value': <string>}}")
        role = ROLES.get(turn.get("from"))
        if role is None:
            raise BadSampleError(
                "unknown_role", f"{at}: turn {k} has unknown role {turn.get('from')!r}; known: {sorted(ROLES)}"
            )
        messages.append({"role": role, "content": turn["value"]})
    body = messages[1:] if messages[0]["role"] == "system" else messages
    order = [m["role"] for m in body]
    expected = ["user", "assistant"] * (len(order) // 2)
    if not order or order != expected:
        raise BadSampleError(
            "bad_turn_order",
            f"{at}: turns must be an optional system turn, then human/gpt alternating and ending with gpt; "
            f"got {[t.get('from') for t in convs]}",
        )
    if any(IMAGE_PLACEHOLDER in m["content"] for m in messages if m["role"] != "user"):
        raise BadSampleError("image_outside_user_turn", f"{at}: {IMAGE_PLACEHOLDER} may stand in human turns only")
    n_placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if n_placeholders != len(images):
        raise BadSampleError(
            "image_count_mismatch",
            f"{at}: {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) for {len(images)} image(s) {images}",
        )
    return rid, images, messages


def evaluation_fields(raw: dict[str, Any], at: str) -> dict[str, Any]:
    """The optional ``answers`` (reference answers of the last question) and ``category`` fields of a record."""
    answers, category = raw.get("answers"), raw.get("category")
    if answers is not None and (
        not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers)
    ):
        raise BadSampleError(
            "malformed_record", f"{at}: 'answers' must be a non-empty list of strings, got {answers!r}"
        )
    if category is not None and not isinstance(category, str):
        raise BadSampleError("malformed_record", f"{at}: 'category' must be a string, got {category!r}")
    return {"answers": answers, "category": category}
