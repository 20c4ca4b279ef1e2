"""Chat templates that render a conversation as token segments, each flagged as supervised or not.

``input_ids`` is the concatenation of the segments' tokens and ``labels`` is built from the very same segments
(-100 on every segment that is not supervised), so the two can never drift apart. Supervised are the assistant answers
and the end-of-turn token that closes each of them; never the system prompt, the user turns or the image tokens.

Templates (see :func:`list_templates`): ``plain``, ``vicuna_v1``, ``llama3`` and ``chatml`` are
:class:`~lightning_mm.data.chat_formats.ChatFormat` tables (:mod:`lightning_mm.data.chat_formats`); ``tokenizer`` is
the tokenizer's own Jinja ``chat_template``, supervised where it marks ``{% generation %}`` spans
(:mod:`lightning_mm.data.tokenizer_template`). This module gathers the names of all three modules and of
:mod:`lightning_mm.data.segments`.
"""

from __future__ import annotations

from lightning_mm.data.chat_formats import CHAT_FORMATS, VICUNA_SYSTEM, ChatFormat
from lightning_mm.data.chat_template import (
    ChatTemplate,
    get_template,
    list_templates,
    register_template,
    split_system,
)
from lightning_mm.data.segments import (
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    Encoded,
    Message,
    Segment,
    encode_conversation,
    encode_segments,
    encode_texts,
    is_single_token,
)
from lightning_mm.data.tokenizer_template import TokenizerTemplate

__all__ = [
    "CHAT_FORMATS",
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "VICUNA_SYSTEM",
    "ChatFormat",
    "ChatTemplate",
    "Encoded",
    "Message",
    "Segment",
    "TokenizerTemplate",
    "encode_conversation",
    "encode_segments",
    "encode_texts",
    "get_template",
    "is_single_token",
    "list_templates",
    "register_template",
    "split_system",
]
