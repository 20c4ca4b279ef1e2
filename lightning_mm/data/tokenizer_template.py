"""The ``tokenizer`` chat template: the tokenizer's own Jinja ``chat_template``, supervised where it marks
``{% generation %}`` spans."""

from __future__ import annotations

import re
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase as Tokenizer

from lightning_mm.data.chat_template import ChatTemplate, jinja_content_macro, list_templates, register_template
from lightning_mm.data.segments import IMAGE_PLACEHOLDER, Message, Segment, is_single_token, placeholder_id

__all__ = ["TokenizerTemplate"]

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@register_template
class TokenizerTemplate(ChatTemplate):
    """The tokenizer's own Jinja ``chat_template``, supervised where it marks ``{% generation %}`` spans.

    transformers' ``return_assistant_tokens_mask`` gives the supervised tokens; each assistant turn must map to
    exactly one supervised span, and ``<image>`` must be a single token (it is expanded afterwards).

    Args:
        chat_template: A Jinja template to use instead of the tokenizer's own.
    """

    name = "tokenizer"

    def __init__(self, chat_template: str | None = None) -> None:
        self.chat_template = chat_template

    def _others(self) -> str:
        return ", ".join(t for t in list_templates() if t != self.name)

    def _source(self, tokenizer: Tokenizer) -> str | None:
        source = self.chat_template or tokenizer.chat_template
        if isinstance(source, dict):  # several named templates: the default one
            source = source.get("default")
        return source or None

    def _template(self, tokenizer: Tokenizer) -> str:
        source = self._source(tokenizer)
        if not source:
            raise ValueError(
                f"Template 'tokenizer': the tokenizer ({type(tokenizer).__name__}) has no chat_template; "
                f"pass one or choose a named template ({self._others()})."
            )
        if not _GENERATION_TAG.search(source):
            raise ValueError(
                "Template 'tokenizer': the chat_template has no {% generation %} ... {% endgeneration %} block, so "
                "transformers cannot tell which tokens are the assistant's answers. Wrap each assistant answer and "
                f"its end-of-turn token in a generation block, or choose a named template ({self._others()})."
            )
        return source

    def jinja(self, tokenizer: Tokenizer | None = None, image_text: str = IMAGE_PLACEHOLDER) -> str | None:
        """The tokenizer's template (or ``chat_template``) behind a prelude that turns every message's content into the
        string training gave it (:meth:`~lightning_mm.data.ChatTemplate.content_text`), so standard content lists
        render as their training strings do. None without a tokenizer or a template."""
        source = self._source(tokenizer) if tokenizer is not None else self.chat_template
        if not source:
            return None
        prelude = (
            "{%- set lmm = namespace(messages=[]) -%}{%- for m in messages -%}"
            "{%- set lmm.messages = lmm.messages + [dict(m, content=lmm_text(m['content']))] -%}"
            "{%- endfor -%}{%- set messages = lmm.messages -%}"
        )
        return jinja_content_macro(self, image_text) + prelude + source

    def end_of_turn(self, tokenizer: Tokenizer) -> str:
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
        last = [s for s in self.render(probe, tokenizer=tokenizer) if s.supervised][-1]
        return tokenizer.convert_ids_to_tokens(last.token_ids[-1])

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        self._template(tokenizer)
        if not is_single_token(tokenizer, IMAGE_PLACEHOLDER):
            raise ValueError(f"Template 'tokenizer' needs {IMAGE_PLACEHOLDER!r} to be a single token of the tokenizer.")

    def render(
        self, messages: Sequence[Message], add_generation_prompt: bool = False, tokenizer: Tokenizer | None = None
    ) -> list[Segment]:
        if tokenizer is None:
            raise ValueError("Template 'tokenizer' renders with the tokenizer: pass `tokenizer=`.")
        out = tokenizer.apply_chat_template(
            list(messages),
            chat_template=self._template(tokenizer),
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        image_id = placeholder_id(tokenizer)
        segs: list[Segment] = []
        start = 0
        for i in range(len(ids) + 1):  # cut at every change of the mask and around every image token
            end = i == len(ids)
            if end or ids[i] == image_id or (i > start and mask[i] != mask[start]):
                if i > start:
                    segs.append(Segment(token_ids=tuple(ids[start:i]), supervised=bool(mask[start])))
                start = i
                if not end and ids[i] == image_id:
                    segs.append(Segment(IMAGE_PLACEHOLDER))
                    start = i + 1
        n_answers = sum(m["role"] == "assistant" for m in messages)
        n_spans = sum(1 for a, b in zip([None, *segs], segs, strict=False) if b.supervised and not (a and a.supervised))
        if n_spans != n_answers:
            raise ValueError(
                f"Template 'tokenizer': the chat_template's generation blocks mark {n_spans} supervised span(s) for "
                f"{n_answers} assistant turn(s); each assistant answer must be inside exactly one generation block."
            )
        return segs
