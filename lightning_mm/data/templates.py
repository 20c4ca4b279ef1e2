"""Chat templates that render a conversation as token segments, each flagged as supervised or not.

``input_ids`` is the concatenation of the segments' tokens and ``labels`` is built from the very same segments
(-100 on every segment that is not supervised), so the two can never drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "ChatMLTemplate",
    "ChatTemplate",
    "Message",
    "Segment",
    "encode_segments",
    "get_template",
    "list_templates",
    "register_template",
]

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered conversation.

    Attributes:
        text: Text to tokenize (may contain ``<image>`` placeholders), or None for ``token_ids``-only segments.
        supervised: Whether the segment's tokens are training targets (assistant answers and their end-of-turn).
        token_ids: Pre-tokenized ids (e.g. BOS), used instead of ``text``.
    """

    text: str | None = None
    supervised: bool = False
    token_ids: tuple[int, ...] = ()


class ChatTemplate(ABC):
    """Renders messages as :class:`Segment` lists. Subclasses define one conversation format."""

    name: str = ""

    @abstractmethod
    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> list[Segment]:
        """Render ``messages`` (roles system/user/assistant) as segments.

        Args:
            messages: The conversation.
            add_generation_prompt: End with the assistant header, for generation (the final assistant turn, if any,
                is then the expected answer and must be left out by the caller).
        """

    def bos_segment(self, tokenizer: PreTrainedTokenizerBase) -> list[Segment]:
        """A leading BOS segment when the tokenizer defines one and the format expects it."""
        return []


_TEMPLATES: dict[str, type[ChatTemplate]] = {}


def register_template(cls: type[ChatTemplate]) -> type[ChatTemplate]:
    """Class decorator adding a template to the registry under ``cls.name``."""
    _TEMPLATES[cls.name] = cls
    return cls


def list_templates() -> list[str]:
    """Names accepted by :func:`get_template`."""
    return sorted(_TEMPLATES)


def get_template(name: str | ChatTemplate, **kwargs) -> ChatTemplate:
    """Template instance by name (or pass an instance through)."""
    if isinstance(name, ChatTemplate):
        return name
    if name not in _TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}. Known: {', '.join(list_templates())}.")
    return _TEMPLATES[name](**kwargs)


@register_template
class ChatMLTemplate(ChatTemplate):
    """ChatML (Qwen2 and the built-in task): ``<|im_start|>{role}\\n{content}<|im_end|>\\n``.

    Args:
        system_prompt: Used when the conversation has no system turn (None: no system turn).
    """

    name = "chatml"

    def __init__(self, system_prompt: str | None = None) -> None:
        self.system_prompt = system_prompt

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> list[Segment]:
        segs: list[Segment] = []
        if self.system_prompt is not None and (not messages or messages[0]["role"] != "system"):
            segs.append(Segment(f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n"))
        for m in messages:
            if m["role"] == "assistant":
                segs.append(Segment("<|im_start|>assistant\n"))
                segs.append(Segment(f"{m['content']}<|im_end|>", supervised=True))
                segs.append(Segment("\n"))
            else:
                segs.append(Segment(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"))
        if add_generation_prompt:
            segs.append(Segment("<|im_start|>assistant\n"))
        return segs


@lru_cache(maxsize=65536)
def _tokenize_cached(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_segments(
    segments: Sequence[Segment],
    tokenizer: PreTrainedTokenizerBase,
    image_token_id: int,
    num_image_tokens: int,
) -> tuple[list[int], list[int], int]:
    """Tokenize segments into ``input_ids`` and ``labels`` built from the same pieces.

    Every ``<image>`` placeholder becomes ``num_image_tokens`` copies of ``image_token_id`` labelled -100.

    Args:
        segments: Output of :meth:`ChatTemplate.render`.
        tokenizer: The LM's tokenizer.
        image_token_id: Id that marks image positions in ``input_ids``.
        num_image_tokens: Tokens one image becomes after the vision tower and projector.

    Returns:
        (input_ids, labels, n_images).
    """
    ids: list[int] = []
    labels: list[int] = []
    n_images = 0
    for seg in segments:
        if seg.token_ids:
            ids.extend(seg.token_ids)
            labels.extend(seg.token_ids if seg.supervised else [IGNORE_INDEX] * len(seg.token_ids))
        if seg.text is None:
            continue
        pieces = seg.text.split(IMAGE_PLACEHOLDER)
        for k, piece in enumerate(pieces):
            if k > 0:  # an image placeholder stood between pieces[k-1] and pieces[k]
                ids.extend([image_token_id] * num_image_tokens)
                labels.extend([IGNORE_INDEX] * num_image_tokens)
                n_images += 1
            if not piece:
                continue
            toks = _tokenize_cached(tokenizer, piece)
            ids.extend(toks)
            labels.extend(toks if seg.supervised else [IGNORE_INDEX] * len(toks))
    return ids, labels, n_images
