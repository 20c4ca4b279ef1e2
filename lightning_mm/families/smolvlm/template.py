"""SmolVLM's chat format (the ``chat_template`` of SmolVLM-256M/500M-Instruct), as a segment template.

``<|im_start|>User:<image>{question}<end_of_utterance>\\nAssistant: {answer}<end_of_utterance>\\n``: the conversation
opens with ``<|im_start|>`` once; each turn is its capitalised role, ``:`` directly before content that starts with an
image and ``: `` otherwise, the content, ``<end_of_utterance>`` and a newline. Generation prompts end with
``Assistant:``, so the space before an answer belongs to the answer. Registered as ``smolvlm`` on import (the SmolVLM
zoo entries import this module).
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import jinja_content_macro, jinja_literal
from lightning_mm.data.templates import IMAGE_PLACEHOLDER, ChatTemplate, Message, Segment, register_template

__all__ = ["SmolVLMTemplate"]

END_OF_UTTERANCE = "<end_of_utterance>"


@register_template
class SmolVLMTemplate(ChatTemplate):
    """SmolVLM-Instruct's format; the answer and its ``<end_of_utterance>`` are supervised.

    Args:
        system_prompt: Used when the conversation has no system turn (None: no system turn).
    """

    name = "smolvlm"
    required_tokens = ("<|im_start|>", END_OF_UTTERANCE)
    image_part = IMAGE_PLACEHOLDER  # SmolVLM-Instruct's own template writes an image part without a newline

    def __init__(self, system_prompt: str | None = None) -> None:
        self.system_prompt = system_prompt

    def end_of_turn(self, tokenizer: PreTrainedTokenizerBase) -> str:
        return END_OF_UTTERANCE

    @staticmethod
    def _head(role: str, content: str) -> str:
        return role.capitalize() + (":" if content.startswith(IMAGE_PLACEHOLDER) else ": ")

    def jinja(self, tokenizer: PreTrainedTokenizerBase | None = None, image_text: str = IMAGE_PLACEHOLDER) -> str:
        """The format as a Jinja ``chat_template`` (the answers inside ``{% generation %}``)."""
        eou, img = jinja_literal(END_OF_UTTERANCE), jinja_literal(image_text)
        system = (
            "" if self.system_prompt is None else jinja_literal(f"System: {self.system_prompt}{END_OF_UTTERANCE}\n")
        )
        return (
            jinja_content_macro(self, image_text)
            + "{{- '<|im_start|>' -}}"
            + (
                "{%- if not messages or messages[0]['role'] != 'system' -%}{{ " + system + " }}{%- endif -%}"
                if system
                else ""
            )
            + "{%- for m in messages -%}{%- set c = lmm_text(m['content']) -%}"
            "{%- set head = m['role'] | capitalize -%}{%- set space = '' if c.startswith(" + img + ") else ' ' -%}"
            "{%- if m['role'] == 'assistant' -%}{{ head + ':' }}{%- generation -%}{{ space + c + " + eou + " }}"
            "{%- endgeneration -%}{{ '\\n' }}"
            "{%- else -%}{{ head + ':' + space + c + " + eou + " + '\\n' }}{%- endif -%}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
        )

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> list[Segment]:
        segs = [Segment("<|im_start|>")]
        if self.system_prompt is not None and (not messages or messages[0]["role"] != "system"):
            segs.append(Segment(f"System: {self.system_prompt}{END_OF_UTTERANCE}\n"))
        for m in messages:
            content = m["content"]
            if m["role"] == "assistant":
                head = self._head("assistant", content)
                segs.append(Segment(head.rstrip(" ")))
                segs.append(Segment(head[len(head.rstrip(" ")) :] + content + END_OF_UTTERANCE, supervised=True))
                segs.append(Segment("\n"))
            else:
                segs.append(Segment(f"{self._head(m['role'], content)}{content}{END_OF_UTTERANCE}\n"))
        if add_generation_prompt:
            segs.append(Segment("Assistant:"))
        return segs
