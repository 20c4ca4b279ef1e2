"""The three conversation shapes of published VLM data, read into LLaVA records.

* ``llava``: LLaVA's ``conversations`` (``{"from": "human" | "gpt" | "system", "value": ...}``, ``<image>`` in the
  text) and ``image`` (one image or a list); the LLaVA instruction mixes, ShareGPT4V, Cambrian.
* ``messages``: the chat messages transformers' chat templates and TRL take: ``{"role", "content"}`` where the content
  is a string or a list of parts ``{"type": "image"}`` / ``{"type": "text", "text": ...}``, and the images in an
  ``images`` column, in the order of the image parts (a part may also carry its own image under ``image``).
* ``cauldron``: the_cauldron's ``texts`` (``{"user", "assistant"}`` pairs) and ``images``; the images come before
  the first question, as in the_cauldron's own processing.

Every shape becomes the raw LLaVA record that :func:`~lightning_mm.data.llava_records.parse_record` validates (roles,
turn order, one ``<image>`` per image), so every check of the LLaVA path applies to every source; the images
themselves (paths, bytes, PIL images) travel beside the record and are decoded when the sample is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning_mm.data.llava_records import BadSampleError
from lightning_mm.data.segments import IMAGE_PLACEHOLDER

__all__ = ["SCHEMA_COLUMNS", "SCHEMAS", "detect_schema", "row_images", "to_llava_record"]

#: Conversation column of each shape.
SCHEMA_COLUMNS = {"llava": "conversations", "messages": "messages", "cauldron": "texts"}
SCHEMAS = tuple(SCHEMA_COLUMNS)
_IMAGE_COLUMNS = ("images", "image")


def detect_schema(columns: Sequence[str], where: str, schema: str | None = None) -> str:
    """The shape of a source with ``columns``: ``schema`` when given (checked), else the one whose column is present.

    Raises:
        ValueError: naming ``where`` and the columns found, when no shape (or not the given one) fits.
    """
    expected = ", ".join(f"{col!r} ({name})" for name, col in SCHEMA_COLUMNS.items())
    if schema is not None:
        if schema not in SCHEMA_COLUMNS:
            raise ValueError(f"{where}: unknown schema {schema!r}; known: {list(SCHEMAS)}")
        if SCHEMA_COLUMNS[schema] not in columns:
            raise ValueError(
                f"{where}: schema {schema!r} needs a {SCHEMA_COLUMNS[schema]!r} column; found columns {list(columns)}"
            )
        return schema
    found = [name for name, col in SCHEMA_COLUMNS.items() if col in columns]
    if len(found) != 1:
        what = "no conversation column" if not found else f"several conversation columns ({found})"
        raise ValueError(
            f"{where}: {what}; found columns {list(columns)}. Expected one of {expected}, or set `schema`."
        )
    return found[0]


def row_images(row: Mapping[str, Any], image_column: str | None = None) -> list[Any]:
    """The images of a row (paths, ``{"bytes", "path"}`` dicts, PIL images), in order; ``[]`` when it has none."""
    columns = (image_column,) if image_column else _IMAGE_COLUMNS
    for col in columns:
        value = row.get(col)
        if value is not None:
            return [v for v in value if v is not None] if isinstance(value, list | tuple) else [value]
    return []


def _text(value: Any, at: str, what: str) -> str:
    if not isinstance(value, str):
        raise BadSampleError("malformed_record", f"{at}: {what} must be a string, got {type(value).__name__}")
    return value


def _message_turns(row: Mapping[str, Any], images: list[Any], at: str) -> tuple[list[dict[str, str]], list[Any]]:
    """(LLaVA turns, images in placeholder order) of a ``messages`` row."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadSampleError("malformed_record", f"{at}: 'messages' must be a non-empty list")
    column = iter(images)
    ordered: list[Any] = []
    turns = []
    for k, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise BadSampleError("malformed_record", f"{at}: message {k} must be {{'role': ..., 'content': ...}}")
        content = message.get("content")
        if isinstance(content, str):
            text = content
            ordered.extend(next(column, None) for _ in range(content.count(IMAGE_PLACEHOLDER)))
        elif isinstance(content, list):
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind == "image":
                    inline = part.get("image") or part.get("path") or part.get("url")
                    ordered.append(inline if inline is not None else next(column, None))
                    parts.append(IMAGE_PLACEHOLDER)
                elif kind == "text":
                    parts.append(_text(part.get("text"), at, f"message {k}'s text part"))
                else:
                    raise BadSampleError(
                        "malformed_record", f"{at}: message {k} has a content part of type {kind!r} (image or text)"
                    )
            text = "\n".join(parts)
        else:
            raise BadSampleError("malformed_record", f"{at}: message {k}'s content must be a string or a list of parts")
        turns.append({"from": message.get("role"), "value": text})
    leftover = sum(1 for _ in column)
    if leftover or any(im is None for im in ordered):
        raise BadSampleError(
            "image_count_mismatch",
            f"{at}: {len(ordered)} image part(s) for {len(images)} image(s) in the images column",
        )
    return turns, ordered


def _cauldron_turns(row: Mapping[str, Any], images: list[Any], at: str) -> list[dict[str, str]]:
    texts = row.get("texts")
    if not isinstance(texts, list) or not texts:
        raise BadSampleError("malformed_record", f"{at}: 'texts' must be a non-empty list of {{'user', 'assistant'}}")
    turns = []
    for k, pair in enumerate(texts):
        if not isinstance(pair, Mapping):
            raise BadSampleError("malformed_record", f"{at}: texts[{k}] must be {{'user': ..., 'assistant': ...}}")
        turns.append({"from": "human", "value": _text(pair.get("user"), at, f"texts[{k}]['user']")})
        turns.append({"from": "gpt", "value": _text(pair.get("assistant"), at, f"texts[{k}]['assistant']")})
    if images and not any(IMAGE_PLACEHOLDER in t["value"] for t in turns):  # the images lead the first question
        turns[0]["value"] = f"{IMAGE_PLACEHOLDER}\n" * len(images) + turns[0]["value"]
    return turns


def to_llava_record(
    row: Mapping[str, Any], schema: str, where: str, image_column: str | None = None
) -> tuple[dict[str, Any], list[Any]]:
    """``(LLaVA record, images)`` of one row of ``schema``.

    The record's ``image`` holds one name per image (the path when the image is a path, else ``where#image<k>``) for
    :func:`~lightning_mm.data.llava_records.parse_record` and the prediction rows; ``images`` are the images
    themselves, in placeholder order. ``id``, ``answers`` and ``category`` are kept when the row has them.

    Raises:
        BadSampleError: naming ``where`` (and the row's id) when the row does not have the shape.
    """
    rid = row.get("id")
    at = f"{where}: record {str(rid)!r}" if rid is not None else where
    images = row_images(row, image_column)
    if schema == "llava":
        turns = row.get("conversations")
    elif schema == "messages":
        turns, images = _message_turns(row, images, at)
    elif schema == "cauldron":
        turns = _cauldron_turns(row, images, at)
    else:
        raise ValueError(f"unknown schema {schema!r}; known: {list(SCHEMAS)}")
    names = [im if isinstance(im, str) else f"{where}#image{k}" for k, im in enumerate(images)]
    record = {"id": str(rid) if rid is not None else where, "image": names, "conversations": turns}
    for key in ("answers", "category"):
        if row.get(key) is not None:
            record[key] = row[key]
    return record, images
