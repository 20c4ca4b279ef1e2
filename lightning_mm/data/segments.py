"""Token segments: the unit chat templates render to, and their encoding into ``input_ids`` and ``labels``.

``input_ids`` is the concatenation of the segments' tokens and ``labels`` is built from the very same segments (-100 on
every segment that is not supervised), so the two can never drift apart. Every ``<image>`` placeholder becomes the
token ids of that image's prompt (see :class:`~lightning_mm.data.layout.ImageLayout`), labelled -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "Encoded",
    "Message",
    "Segment",
    "encode_conversation",
    "encode_segments",
    "encode_texts",
    "is_single_token",
]

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
SPECIAL_TOKENS = ("bos", "eos")  # values of Segment.special


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered conversation.

    Attributes:
        text: Text to tokenize (may contain ``<image>`` placeholders), or None for ``token_ids``/``special`` segments.
        supervised: Whether the segment's tokens are training targets (assistant answers and their end-of-turn).
        token_ids: Pre-tokenized ids, used instead of ``text``.
        special: ``bos`` or ``eos``: the tokenizer's own token, resolved when encoding (a missing BOS is left out,
            a missing EOS is an error).
    """

    text: str | None = None
    supervised: bool = False
    token_ids: tuple[int, ...] = ()
    special: str | None = None


# ---------------------------------------------------------------------------------------------------- text -> ids
# transformers methods on the way from `tokenizer(texts)` to the Rust `encode_batch` (v4 and v5 names); a tokenizer
# class that overrides one of them may change the ids, so it keeps the transformers path
_CALL_PATH = ("__call__", "_call_one", "encode_plus", "batch_encode_plus", "_encode_plus", "_batch_encode_plus")


@lru_cache(maxsize=64)
def _plain_fast_class(cls: type) -> bool:
    return issubclass(cls, PreTrainedTokenizerFast) and all(
        getattr(cls, name, None) is getattr(PreTrainedTokenizerFast, name, None) for name in _CALL_PATH
    )


def _direct_backend(tokenizer: PreTrainedTokenizerBase) -> Any | None:
    """The Rust ``tokenizers.Tokenizer`` of ``tokenizer`` when calling it directly gives the same ids, else None.

    transformers' ``tokenizer(texts, add_special_tokens=False)`` turns off the backend's truncation and padding,
    sets its ``encode_special_tokens`` from ``split_special_tokens`` and calls ``encode_batch``: with the backend
    already in that state, and a tokenizer class that does not change that path, the direct call is the same.
    """
    if not _plain_fast_class(type(tokenizer)):
        return None
    backend = tokenizer.backend_tokenizer
    if backend.truncation is not None or backend.padding is not None:
        return None
    if getattr(backend, "encode_special_tokens", False) != bool(getattr(tokenizer, "split_special_tokens", False)):
        return None
    return backend


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text without special tokens, as ``tokenizer(texts, add_special_tokens=False)`` gives them.

    For a fast tokenizer the Rust backend's ``encode_batch_fast`` (no offsets) is called directly, skipping
    transformers' per-call Python work, whenever that gives the same ids (see :func:`_direct_backend`); otherwise,
    and for slow tokenizers, the tokenizer is called.

    Args:
        tokenizer: The LM's tokenizer.
        texts: Texts to encode in one call.
    """
    if not texts:
        return []
    backend = _direct_backend(tokenizer)
    if backend is None:
        return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # `_fast` since tokenizers 0.21
    return [e.ids for e in encode(list(texts), add_special_tokens=False)]


@lru_cache(maxsize=4096)
def _tokenize_cached(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[int, ...]:
    return tuple(encode_texts(tokenizer, [text])[0])


def is_single_token(tokenizer: PreTrainedTokenizerBase, text: str) -> bool:
    """Whether ``text`` tokenizes to exactly one token that is not the unknown token."""
    ids = _tokenize_cached(tokenizer, text)
    return len(ids) == 1 and (tokenizer.unk_token_id is None or ids[0] != tokenizer.unk_token_id)


def placeholder_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """Id of ``<image>`` when it is a single token of ``tokenizer``, else None."""
    return _tokenize_cached(tokenizer, IMAGE_PLACEHOLDER)[0] if is_single_token(tokenizer, IMAGE_PLACEHOLDER) else None


_CACHE_MAX_CHARS = 64  # short pieces (template markup, common prompts) repeat; long ones are tokenized in one batch


def _tokenize_pieces(tokenizer: PreTrainedTokenizerBase, pieces: list[str]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...] | None] = [None] * len(pieces)
    todo: list[int] = []
    for k, p in enumerate(pieces):
        if len(p) <= _CACHE_MAX_CHARS:
            out[k] = _tokenize_cached(tokenizer, p)
        else:
            todo.append(k)
    if todo:
        batch = encode_texts(tokenizer, [pieces[k] for k in todo])
        for k, ids in zip(todo, batch, strict=True):
            out[k] = tuple(ids)
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------- segments -> ids
class Encoded(NamedTuple):
    """A tokenized conversation.

    Attributes:
        input_ids: Token ids.
        labels: Same length as ``input_ids``; -100 where not supervised.
        image_spans: ``(start, end)`` of each image's prompt ids in ``input_ids``, in order (end exclusive).
    """

    input_ids: list[int]
    labels: list[int]
    image_spans: list[tuple[int, int]]


def _special_id(tokenizer: PreTrainedTokenizerBase, special: str) -> int | None:
    if special not in SPECIAL_TOKENS:
        raise ValueError(f"Segment.special must be one of {SPECIAL_TOKENS}, got {special!r}")
    tid = getattr(tokenizer, f"{special}_token_id")
    if tid is None and special == "eos":
        raise ValueError("The chat template ends answers with EOS, but the tokenizer defines no EOS token.")
    return tid


def encode_conversation(
    segments: Sequence[Segment],
    tokenizer: PreTrainedTokenizerBase,
    image_prompts: Sequence[Sequence[int]],
) -> Encoded:
    """Tokenize segments into ``input_ids`` and ``labels`` built from the same pieces, images expanded.

    The k-th ``<image>`` placeholder becomes ``image_prompts[k]`` (its image-token ids and any marker ids), labelled
    -100 also inside a supervised segment.

    Args:
        segments: Output of :meth:`~lightning_mm.data.ChatTemplate.render`.
        tokenizer: The LM's tokenizer.
        image_prompts: Ids that replace each placeholder, in order (one entry per image).

    Raises:
        ValueError: when the segments hold another number of placeholders than ``image_prompts`` has entries.
    """
    # one tokenizer call for all text pieces of the conversation
    plan: list[tuple[Segment, list[str]]] = [
        (seg, seg.text.split(IMAGE_PLACEHOLDER) if seg.text is not None else []) for seg in segments
    ]
    n_placeholders = sum(max(len(pieces) - 1, 0) for _, pieces in plan)
    if n_placeholders != len(image_prompts):
        raise ValueError(f"{n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) for {len(image_prompts)} image(s)")
    tokens = iter(_tokenize_pieces(tokenizer, [p for _, pieces in plan for p in pieces if p]))
    prompts = iter(image_prompts)
    ids: list[int] = []
    labels: list[int] = []
    spans: list[tuple[int, int]] = []

    def add(toks: Sequence[int], supervised: bool) -> None:
        ids.extend(toks)
        labels.extend(toks if supervised else [IGNORE_INDEX] * len(toks))

    for seg, pieces in plan:
        if seg.special is not None:
            tid = _special_id(tokenizer, seg.special)
            if tid is not None:
                add([tid], seg.supervised)
        if seg.token_ids:
            add(seg.token_ids, seg.supervised)
        for k, piece in enumerate(pieces):
            if k > 0:  # an image placeholder stood between pieces[k-1] and pieces[k]
                start = len(ids)
                add(next(prompts), False)
                spans.append((start, len(ids)))
            if piece:
                add(next(tokens), seg.supervised)
    return Encoded(ids, labels, spans)


def count_placeholders(segments: Sequence[Segment]) -> int:
    """Number of ``<image>`` placeholders in the text segments."""
    return sum(seg.text.count(IMAGE_PLACEHOLDER) for seg in segments if seg.text is not None)


def encode_segments(
    segments: Sequence[Segment],
    tokenizer: PreTrainedTokenizerBase,
    image_token_id: int,
    num_image_tokens: int,
) -> tuple[list[int], list[int], int]:
    """Tokenize segments into ``input_ids`` and ``labels``, every image ``num_image_tokens`` image tokens.

    The fixed-count form of :func:`encode_conversation`: every ``<image>`` placeholder becomes ``num_image_tokens``
    copies of ``image_token_id`` labelled -100, also inside a supervised segment.

    Args:
        segments: Output of :meth:`~lightning_mm.data.ChatTemplate.render`.
        tokenizer: The LM's tokenizer.
        image_token_id: Id that marks image positions in ``input_ids``.
        num_image_tokens: Tokens one image becomes after the vision tower and projector.

    Returns:
        (input_ids, labels, n_images).
    """
    prompt = [image_token_id] * num_image_tokens
    ids, labels, spans = encode_conversation(segments, tokenizer, [prompt] * count_placeholders(segments))
    return ids, labels, len(spans)
