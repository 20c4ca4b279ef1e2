"""The chat-template interface and its registry: a template renders a conversation as token segments.

Supervised segments are the assistant answers and the end-of-turn token that closes each of them; never the system
prompt, the user turns or the image tokens. The built-in templates are registered by
:mod:`lightning_mm.data.chat_formats` (data: a role -> (prefix, suffix) table each) and
:mod:`lightning_mm.data.tokenizer_template` (the tokenizer's own Jinja template).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, TypeVar

from transformers import PreTrainedTokenizerBase as Tokenizer

from lightning_mm.data.segments import Message, Segment, is_single_token

__all__ = ["ChatTemplate", "get_template", "list_templates", "register_template", "split_system"]


class ChatTemplate(ABC):
    """Renders messages as :class:`~lightning_mm.data.Segment` lists. Subclasses define one conversation format.

    Attributes:
        name: Registry name.
        required_tokens: Strings the template writes that must each be a single token of the tokenizer.
    """

    name: str = ""
    required_tokens: tuple[str, ...] = ()

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
