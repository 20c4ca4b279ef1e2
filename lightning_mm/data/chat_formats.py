"""Chat formats as data: a role -> (prefix, suffix) table and a few settings per format.

* ``plain``: LLaVA's alignment format. Only the images of a user turn are kept, then the answer (the caption) and EOS.
* ``vicuna_v1``: LLaVA-1.5's finetune format, ``{system} USER: {q} ASSISTANT: {a}</s>USER: ...``.
* ``llama3``: ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`` after BOS.
* ``chatml``: Qwen2's ``<|im_start|>{role}\\n{content}<|im_end|>\\n``.

Another format is one more :class:`ChatFormat` passed to :func:`~lightning_mm.data.register_template`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase as Tokenizer

from lightning_mm.data.chat_template import (
    ChatTemplate,
    jinja_content_macro,
    jinja_literal,
    register_template,
    split_system,
)
from lightning_mm.data.segments import IMAGE_PLACEHOLDER, Message, Segment

__all__ = ["CHAT_FORMATS", "VICUNA_SYSTEM", "ChatFormat"]

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def _text(segments: list[Segment], text: str) -> None:
    if text:
        segments.append(Segment(text))


def _joined(segments: list[Segment]) -> list[Segment]:
    """Consecutive unsupervised text segments merged into one (they are then tokenized as one text)."""
    out: list[Segment] = []
    for seg in segments:
        plain = seg.text is not None and not seg.supervised and seg.special is None and not seg.token_ids
        last = out[-1] if out else None
        if plain and last is not None and last.text is not None and not last.supervised and last.special is None:
            out[-1] = Segment(last.text + seg.text)
        else:
            out.append(seg)
    return out


@dataclass(frozen=True)
class ChatFormat(ChatTemplate):
    """A conversation format given as data.

    A system or user turn is written ``prefix + content + suffix`` of its role, as one unsupervised segment. An
    assistant turn is its role's prefix (the header, unsupervised; also the generation prompt), then the supervised
    ``answer_lead + content + suffix`` where the assistant's suffix is the end-of-turn text (empty: the tokenizer's
    EOS token closes the answer), then ``after_answer`` (unsupervised). Empty unsupervised text is left out.

    Args:
        name: Registry name.
        roles: Role -> (prefix, suffix); None leaves that role's turns out.
        system_prompt: Used when the conversation has no system turn (None: no system turn).
        bos: Start with the tokenizer's BOS token (left out when the tokenizer has none).
        answer_lead: Supervised text before each answer.
        after_answer: Unsupervised text after each answer's end of turn.
        strip: Trim each turn's content.
        keep_prompt: Keep the user text; False keeps only each user turn's ``<image>`` placeholders (LLaVA's plain).
        join_prompt: Write the unsupervised text between two answers as one segment (tokenized as one text).
        empty_system: Write a system turn whose content is empty (False: leave it out).
        required_tokens: Strings the format writes that must each be a single token of the tokenizer.
    """

    name: str
    roles: Mapping[str, tuple[str, str] | None] = field(default_factory=dict)
    system_prompt: str | None = None
    bos: bool = False
    answer_lead: str = ""
    after_answer: str = ""
    strip: bool = False
    keep_prompt: bool = True
    join_prompt: bool = False
    empty_system: bool = True
    required_tokens: tuple[str, ...] = field(default=())

    def _role(self, role: str) -> tuple[str, str] | None:
        if role not in self.roles:
            raise ValueError(f"Template {self.name!r} has no role {role!r}; roles: {', '.join(self.roles)}.")
        return self.roles[role]

    def end_of_turn(self, tokenizer: Tokenizer) -> str:
        _, eot = self._role("assistant")
        return eot or super().end_of_turn(tokenizer)

    def _content(self, message: Message) -> str:
        content = message["content"]
        if not self.keep_prompt and message["role"] == "user":
            return IMAGE_PLACEHOLDER * content.count(IMAGE_PLACEHOLDER)
        return content.strip() if self.strip else content

    def render(
        self, messages: Sequence[Message], add_generation_prompt: bool = False, tokenizer: Tokenizer | None = None
    ) -> list[Segment]:
        system, turns = split_system(messages, self.system_prompt)
        if system is not None and (system or self.empty_system):
            turns = [{"role": "system", "content": system}, *turns]
        segs = [Segment(special="bos")] if self.bos else []
        header, eot = self._role("assistant")
        for m in turns:
            fmt = self._role(m["role"])
            if fmt is None:
                continue
            if m["role"] != "assistant":
                _text(segs, f"{fmt[0]}{self._content(m)}{fmt[1]}")
                continue
            _text(segs, header)
            segs.append(Segment(f"{self.answer_lead}{self._content(m)}{eot}", supervised=True))
            if not eot:
                segs.append(Segment(special="eos", supervised=True))
            _text(segs, self.after_answer)
        if add_generation_prompt:
            _text(segs, header)
        return _joined(segs) if self.join_prompt else segs

    def jinja(self, tokenizer: Tokenizer | None = None, image_text: str = IMAGE_PLACEHOLDER) -> str:
        """The format as a Jinja ``chat_template``: the text :meth:`render` writes (BOS and EOS as the tokenizer's
        ``bos_token`` / ``eos_token``), answers inside ``{% generation %}``, string or content-list messages."""
        lit = jinja_literal
        system = "none" if self.system_prompt is None else lit(self.system_prompt)
        out = [
            jinja_content_macro(self, image_text),
            "{%- if messages and messages[0]['role'] == 'system' -%}",
            "{%- set system = lmm_text(messages[0]['content']) -%}{%- set turns = messages[1:] -%}",
            f"{{%- else -%}}{{%- set system = {system} -%}}{{%- set turns = messages -%}}{{%- endif -%}}",
            f"{{%- if system is not none and (system or {str(self.empty_system).lower()}) -%}}",
            "{%- set turns = [{'role': 'system', 'content': system}] + turns -%}{%- endif -%}",
        ]
        if self.bos:
            out.append("{%- if bos_token is defined and bos_token -%}{{ bos_token }}{%- endif -%}")
        out.append("{%- for m in turns -%}{%- set c = lmm_text(m['content']) -%}")
        if not self.keep_prompt:
            out.append(
                f"{{%- if m['role'] == 'user' -%}}{{%- set c = {lit(image_text)} * c.count({lit(image_text)}) -%}}"
            )
            out.append("{%- elif " + str(self.strip).lower() + " -%}{%- set c = c | trim -%}{%- endif -%}")
        elif self.strip:
            out.append("{%- set c = c | trim -%}")
        branches = []
        for role, fmt in self.roles.items():
            if fmt is None:
                body = ""
            elif role == "assistant":
                header, eot = fmt
                answer = f"{{{{ {lit(self.answer_lead)} + c + {lit(eot)} if {lit(eot)} else {lit(self.answer_lead)} + c + eos_token }}}}"
                body = f"{{{{ {lit(header)} }}}}{{%- generation -%}}{answer}{{%- endgeneration -%}}{{{{ {lit(self.after_answer)} }}}}"
            else:
                body = f"{{{{ {lit(fmt[0])} + c + {lit(fmt[1])} }}}}"
            branches.append(f"{{%- {'if' if not branches else 'elif'} m['role'] == {lit(role)} -%}}{body}")
        unknown = lit(f"Template {self.name!r} has no role ") + " + m['role']"
        out.append("".join(branches) + f"{{%- else -%}}{{{{ raise_exception({unknown}) }}}}{{%- endif -%}}")
        out.append("{%- endfor -%}")
        out.append(f"{{%- if add_generation_prompt -%}}{{{{ {lit(self._role('assistant')[0])} }}}}{{%- endif -%}}")
        return "".join(out)


def _llama3_turn(role: str) -> tuple[str, str]:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>"


def _chatml_turn(role: str, end: str = "<|im_end|>\n") -> tuple[str, str]:
    return f"<|im_start|>{role}\n", end


#: The built-in formats, registered under their names.
CHAT_FORMATS: tuple[ChatFormat, ...] = (
    ChatFormat(
        name="plain",
        roles={"system": None, "user": ("", ""), "assistant": ("", "")},
        bos=True,
        keep_prompt=False,
    ),
    ChatFormat(
        name="vicuna_v1",
        # the user turn ends with the assistant's header, and the space after it belongs to the answer (as in
        # generation, where the prompt ends with ``ASSISTANT:``)
        roles={"system": ("", " "), "user": ("USER: ", " ASSISTANT:"), "assistant": ("", "")},
        system_prompt=VICUNA_SYSTEM,
        bos=True,
        answer_lead=" ",
        join_prompt=True,
        empty_system=False,
    ),
    ChatFormat(
        name="llama3",
        roles={r: _llama3_turn(r) for r in ("system", "user", "assistant")},
        bos=True,
        strip=True,
        required_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    ChatFormat(
        name="chatml",
        roles={
            "system": _chatml_turn("system"),
            "user": _chatml_turn("user"),
            "assistant": _chatml_turn("assistant", "<|im_end|>"),
        },
        after_answer="\n",
        required_tokens=("<|im_start|>", "<|im_end|>"),
    ),
)
for _format in CHAT_FORMATS:
    register_template(_format)
