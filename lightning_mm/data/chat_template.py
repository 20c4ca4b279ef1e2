"""The chat-template interface and its registry: a template renders a conversation as token segments.

Supervised segments are the assistant answers and the end-of-turn token that closes each of them; never the system
prompt, the user turns or the image tokens. The built-in templates are registered by
:mod:`lightning_mm.data.chat_formats` (data: a role -> (prefix, suffix) table each) and
:mod:`lightning_mm.data.tokenizer_template` (the tokenizer's own Jinja template).

A template also writes itself as a Jinja ``chat_template`` for transformers (:meth:`ChatTemplate.jinja`, written into
every export), rendering what :meth:`ChatTemplate.render` renders for messages whose contents are strings (with
``<image>`` placeholders, as in training data) or transformers' standard content lists
(``[{"type": "image"}, {"type": "text", "text": "..."}]``), which :meth:`ChatTemplate.content_text` turns into the
same string: each image part its placeholder and a newline, each text part its text, in order.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from transformers import PreTrainedTokenizerBase as Tokenizer

from lightning_mm.data.segments import IMAGE_PLACEHOLDER, Message, Segment, is_single_token

__all__ = [
    "ChatTemplate",
    "get_template",
    "jinja_content_macro",
    "jinja_literal",
    "list_templates",
    "register_template",
    "split_system",
    "tokenizer_with_template",
]


class ChatTemplate(ABC):
    """Renders messages as :class:`~lightning_mm.data.Segment` lists. Subclasses define one conversation format.

    Attributes:
        name: Registry name.
        required_tokens: Strings the template writes that must each be a single token of the tokenizer.
        image_part: What an image part of a standard content list becomes in the message's text (the placeholder and
            a newline: how LLaVA data and ``lightning-mm chat`` put images before a question).
    """

    name: str = ""
    required_tokens: tuple[str, ...] = ()
    image_part: str = IMAGE_PLACEHOLDER + "\n"

    @abstractmethod
    def render(
        self, messages: Sequence[Message], add_generation_prompt: bool = False, tokenizer: Tokenizer | None = None
    ) -> list[Segment]:
        """Render ``messages`` (roles system/user/assistant) as segments.

        Args:
            messages: The conversation.
            add_generation_prompt: End with the assistant header, for generation (the final assistant turn, if any,
                is then the expected answer and must be left out by the caller).
            tokenizer: The tokenizer, for templates that need it to render (``tokenizer``); others ignore it.
        """

    def content_text(self, content: str | Sequence[Mapping[str, Any]] | None) -> str:
        """A message's content as the string :meth:`render` reads: a string as is; a standard content list part by
        part (``{"type": "image"}`` -> :attr:`image_part`, ``{"type": "text", "text": t}`` -> ``t``, others left
        out)."""
        if content is None or isinstance(content, str):
            return content or ""
        parts = {"image": lambda part: self.image_part, "text": lambda part: part.get("text", "")}
        return "".join(parts[part.get("type")](part) for part in content if part.get("type") in parts)

    def jinja(self, tokenizer: Tokenizer | None = None, image_text: str = IMAGE_PLACEHOLDER) -> str | None:
        """This template as a Jinja ``chat_template`` for transformers: the text :meth:`render` renders, for string
        and standard content-list messages alike, with ``{% generation %}`` around the supervised answers.

        Args:
            tokenizer: The tokenizer (for templates that render with it).
            image_text: What the exported processor expects in the text for one image (each ``<image>``
                placeholder becomes it).

        Returns:
            The template source; None when the template cannot be written as Jinja (the tokenizer's own template is
            exported then).
        """
        return None

    def end_of_turn(self, tokenizer: Tokenizer) -> str:
        """Text of the token that closes an assistant turn (the stop token for generation)."""
        if tokenizer.eos_token is None:
            raise ValueError(f"Template {self.name!r} ends answers with EOS, but the tokenizer defines no EOS token.")
        return tokenizer.eos_token

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise a ``ValueError`` when the tokenizer cannot encode this template faithfully.

        Every string in ``required_tokens`` and the end-of-turn token must be a single token; otherwise the model
        would learn to emit a multi-token end of turn that generation never stops on.
        """
        wanted = dict.fromkeys((*self.required_tokens, self.end_of_turn(tokenizer)))
        bad = [t for t in wanted if not is_single_token(tokenizer, t)]
        if bad:
            raise ValueError(
                f"Template {self.name!r} needs {bad} to be single tokens of the tokenizer "
                f"({type(tokenizer).__name__}, {len(tokenizer)} tokens); add them as special tokens or pick the "
                f"template that matches the model ({', '.join(list_templates())})."
            )


T = TypeVar("T", type[ChatTemplate], ChatTemplate)
_TEMPLATES: dict[str, type[ChatTemplate] | ChatTemplate] = {}


def register_template(template: T) -> T:
    """Add a template to the registry under its ``name``: a :class:`ChatTemplate` subclass (usable as a class
    decorator; ``get_template`` calls it with the options) or an instance that is a dataclass, such as a
    :class:`~lightning_mm.data.ChatFormat` (``get_template`` replaces its fields by the options)."""
    _TEMPLATES[template.name] = template
    return template


def list_templates() -> list[str]:
    """Names accepted by :func:`get_template`."""
    return sorted(_TEMPLATES)


def get_template(name: str | ChatTemplate, **kwargs: Any) -> ChatTemplate:
    """Template instance by name (or pass an instance through).

    Args:
        name: Registry name (``chatml``, ``vicuna_v1``, ...) or a template instance.
        **kwargs: Options of the template (e.g. ``system_prompt``).
    """
    if isinstance(name, ChatTemplate):
        return name
    if name not in _TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}. Known: {', '.join(list_templates())}.")
    entry = _TEMPLATES[name]
    if isinstance(entry, type):
        return entry(**kwargs)
    fields = {f.name for f in dataclasses.fields(entry)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"Chat template {name!r} has no option {unknown}; options: {', '.join(sorted(fields))}.")
    return dataclasses.replace(entry, **kwargs)


def split_system(messages: Sequence[Message], default: str | None) -> tuple[str | None, Sequence[Message]]:
    """(system prompt, remaining messages): a leading system turn wins over ``default``."""
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return default, messages


# ------------------------------------------------------------------------------------------------ Jinja for export
def jinja_literal(text: str) -> str:
    """``text`` as a Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(text)


def jinja_content_macro(template: ChatTemplate, image_text: str = IMAGE_PLACEHOLDER) -> str:
    """Jinja macro ``lmm_text(content)``: :meth:`ChatTemplate.content_text` of a string or a standard content list,
    each ``<image>`` placeholder written as ``image_text``."""
    image_part = jinja_literal(template.image_part.replace(IMAGE_PLACEHOLDER, image_text))
    swap = (
        ""
        if image_text == IMAGE_PLACEHOLDER
        else f" | replace({jinja_literal(IMAGE_PLACEHOLDER)}, {jinja_literal(image_text)})"
    )
    return (
        "{%- macro lmm_text(content) -%}"
        "{%- if content is string -%}{{ content" + swap + " }}"
        "{%- elif content is iterable -%}{%- for part in content -%}"
        "{%- if part['type'] == 'image' -%}{{ " + image_part + " }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text']" + swap + " }}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
    )


def tokenizer_with_template(
    tokenizer: Tokenizer, template: ChatTemplate, image_text: str = IMAGE_PLACEHOLDER
) -> Tokenizer:
    """A copy of ``tokenizer`` whose ``chat_template`` is ``template``'s Jinja (:meth:`ChatTemplate.jinja`), for an
    export: transformers' ``apply_chat_template`` then renders prompts as training did. The tokenizer itself when the
    template has no Jinja form."""
    source = template.jinja(tokenizer, image_text)
    if source is None:
        return tokenizer
    named = copy.deepcopy(tokenizer)
    named.chat_template = source
    return named
