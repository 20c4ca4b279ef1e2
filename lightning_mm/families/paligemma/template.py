"""PaliGemma's prompt format, as ``PaliGemmaProcessor`` writes it, as a segment template (``paligemma``).

``PaliGemmaProcessor(text=prefix, suffix=answer)`` writes the image tokens, BOS, the prefix text and ``\\n`` (the
prefix, attended to whole), then the answer and EOS (the suffix, the only targets). Here the images of the user turns
all go first, then BOS, then each user turn's text with its ``<image>`` placeholders taken out (trimmed) and ``\\n``;
an answer is supervised with its EOS. A system turn is left out (PaliGemma has none). A conversation with more than one
question is rendered as is, and refused by the prefix-LM collator (one prefix and one answer per sample), which names
the sample. Registered as ``paligemma`` on import of the family.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import jinja_content_macro, jinja_literal
from lightning_mm.data.templates import IMAGE_PLACEHOLDER, ChatTemplate, Message, Segment, register_template

__all__ = ["PaliGemmaTemplate"]


@register_template
class PaliGemmaTemplate(ChatTemplate):
    """``<image>...<bos>{prefix}\\n{answer}<eos>``; the answer and its EOS are supervised."""

    name = "paligemma"

    def jinja(self, tokenizer: PreTrainedTokenizerBase | None = None, image_text: str = IMAGE_PLACEHOLDER) -> str:
        """The format as a Jinja ``chat_template`` (BOS and EOS as the tokenizer's; answers in ``{% generation %}``)."""
        img = jinja_literal(image_text)
        return (
            jinja_content_macro(self, image_text)
            + "{%- set lmm = namespace(images=0) -%}{%- for m in messages if m['role'] == 'user' -%}"
            "{%- set lmm.images = lmm.images + lmm_text(m['content']).count(" + img + ") -%}{%- endfor -%}"
            "{{- " + img + " * lmm.images + (bos_token if bos_token is defined and bos_token else '') -}}"
            "{%- for m in messages if m['role'] != 'system' -%}{%- set c = lmm_text(m['content']) -%}"
            "{%- if m['role'] == 'assistant' -%}{%- generation -%}{{ c + eos_token }}{%- endgeneration -%}"
            "{%- else -%}{{ (c | replace(" + img + ", '') | trim) + '\\n' }}{%- endif -%}{%- endfor -%}"
        )

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> list[Segment]:
        turns = [m for m in messages if m["role"] != "system"]
        images = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in turns if m["role"] == "user")
        segs = [Segment(IMAGE_PLACEHOLDER * images)] if images else []
        segs.append(Segment(special="bos"))
        for m in turns:
            if m["role"] == "assistant":
                segs.append(Segment(m["content"], supervised=True))
                segs.append(Segment(special="eos", supervised=True))
            else:
                segs.append(Segment(m["content"].replace(IMAGE_PLACEHOLDER, "").strip() + "\n"))
        return segs
