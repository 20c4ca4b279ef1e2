"""Chat templates that render a conversation as token segments, each flagged as supervised or not.

``input_ids`` is the concatenation of the segments' tokens and ``labels`` is built from the very same segments
(-100 on every segment that is not supervised), so the two can never drift apart. Supervised are the assistant answers
and the end-of-turn token that closes each of them; never the system prompt, the user turns or the image tokens.

Templates (see :func:`list_templates`):

* ``plain``: LLaVA's alignment format. Only the images of a user turn are kept, then the answer (the caption) and EOS.
* ``vicuna_v1``: LLaVA-1.5's finetune format, ``{system} USER: {q} ASSISTANT: {a}</s>USER: ...``.
* ``llama3``: ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`` after BOS.
* ``chatml``: Qwen2's ``<|im_start|>{role}\\n{content}<|im_end|>\\n``.
* ``tokenizer``: the tokenizer's own Jinja ``chat_template``; supervised tokens come from its ``{% generation %}`` spans.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "ChatMLTemplate",
    "ChatTemplate",
    "Llama3Template",
    "Message",
    "PlainTemplate",
    "Segment",
    "TokenizerTemplate",
    "VicunaV1Template",
    "encode_segments",
    "encode_texts",
    "get_template",
    "list_templates",
    "register_template",
]

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


class ChatTemplate(ABC):
    """Renders messages as :class:`Segment` lists. Subclasses define one conversation format.

    Attributes:
        name: Registry name.
        required_tokens: Strings the template writes that must each be a single token of the tokenizer.
    """

    name: str = ""
    required_tokens: tuple[str, ...] = ()

    @abstractmethod
    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> list[Segment]:
        """Render ``messages`` (roles system/user/assistant) as segments.

        Args:
            messages: The conversation.
            add_generation_prompt: End with the assistant header, for generation (the final assistant turn, if any,
                is then the expected answer and must be left out by the caller).
            tokenizer: The tokenizer, for templates that need it to render (``tokenizer``); others ignore it.
        """

    def end_of_turn(self, tokenizer: PreTrainedTokenizerBase) -> str:
        """Text of the token that closes an assistant turn (the stop token for generation)."""
        if tokenizer.eos_token is None:
            raise ValueError(f"Template {self.name!r} ends answers with EOS, but the tokenizer defines no EOS token.")
        return tokenizer.eos_token

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
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


_TEMPLATES: dict[str, type[ChatTemplate]] = {}


def register_template(cls: type[ChatTemplate]) -> type[ChatTemplate]:
    """Class decorator adding a template to the registry under ``cls.name``."""
    _TEMPLATES[cls.name] = cls
    return cls


def list_templates() -> list[str]:
    """Names accepted by :func:`get_template`."""
    return sorted(_TEMPLATES)


def get_template(name: str | ChatTemplate, **kwargs: Any) -> ChatTemplate:
    """Template instance by name (or pass an instance through).

    Args:
        name: Registry name (``chatml``, ``vicuna_v1``, ...) or a template instance.
        **kwargs: Constructor arguments of the template (e.g. ``system_prompt``).
    """
    if isinstance(name, ChatTemplate):
        return name
    if name not in _TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}. Known: {', '.join(list_templates())}.")
    return _TEMPLATES[name](**kwargs)


def split_system(messages: Sequence[Message], default: str | None) -> tuple[str | None, Sequence[Message]]:
    """(system prompt, remaining messages): a leading system turn wins over ``default``."""
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return default, messages


# ---------------------------------------------------------------------------------------------------- templates
@register_template
class PlainTemplate(ChatTemplate):
    """LLaVA's alignment format: BOS, the images of each user turn, then the answer (caption) and EOS.

    The user text is left out (LLaVA's ``plain`` keeps only the image), so the projector learns to caption.

    Args:
        keep_prompt: Keep the user text after all (images in place), e.g. for instruction-style captions.
    """

    name = "plain"

    def __init__(self, keep_prompt: bool = False) -> None:
        self.keep_prompt = keep_prompt

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> list[Segment]:
        segs = [Segment(special="bos")]
        for m in messages:
            if m["role"] == "user":
                text = m["content"] if self.keep_prompt else IMAGE_PLACEHOLDER * m["content"].count(IMAGE_PLACEHOLDER)
                if text:
                    segs.append(Segment(text))
            elif m["role"] == "assistant":
                segs.append(Segment(m["content"], supervised=True))
                segs.append(Segment(special="eos", supervised=True))
        return segs


@register_template
class VicunaV1Template(ChatTemplate):
    """LLaVA-1.5's finetune format (Vicuna v1): ``{system} USER: {q} ASSISTANT: {a}</s>USER: ...``.

    The space after ``ASSISTANT:`` belongs to the answer, as in generation, where the prompt ends with ``ASSISTANT:``.

    Args:
        system_prompt: Used when the conversation has no system turn (empty string: none).
    """

    name = "vicuna_v1"
    DEFAULT_SYSTEM = (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )

    def __init__(self, system_prompt: str = DEFAULT_SYSTEM) -> None:
        self.system_prompt = system_prompt

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> list[Segment]:
        system, turns = split_system(messages, self.system_prompt)
        segs = [Segment(special="bos")]
        prefix = f"{system} " if system else ""
        for m in turns:
            if m["role"] == "user":
                segs.append(Segment(f"{prefix}USER: {m['content']} ASSISTANT:"))
                prefix = ""
            else:
                segs.append(Segment(f" {m['content']}", supervised=True))
                segs.append(Segment(special="eos", supervised=True))
        return segs


@register_template
class Llama3Template(ChatTemplate):
    """Llama 3 instruct format; contents are trimmed as Llama 3's own template does.

    Args:
        system_prompt: Used when the conversation has no system turn (None: no system turn).
    """

    name = "llama3"
    required_tokens = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

    def __init__(self, system_prompt: str | None = None) -> None:
        self.system_prompt = system_prompt

    @staticmethod
    def _header(role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    def end_of_turn(self, tokenizer: PreTrainedTokenizerBase) -> str:
        return "<|eot_id|>"

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> list[Segment]:
        system, turns = split_system(messages, self.system_prompt)
        segs = [Segment(special="bos")]
        if system is not None:
            segs.append(Segment(f"{self._header('system')}{system.strip()}<|eot_id|>"))
        for m in turns:
            if m["role"] == "assistant":
                segs.append(Segment(self._header("assistant")))
                segs.append(Segment(f"{m['content'].strip()}<|eot_id|>", supervised=True))
            else:
                segs.append(Segment(f"{self._header(m['role'])}{m['content'].strip()}<|eot_id|>"))
        if add_generation_prompt:
            segs.append(Segment(self._header("assistant")))
        return segs


@register_template
class ChatMLTemplate(ChatTemplate):
    """ChatML (Qwen2 and the built-in task): ``<|im_start|>{role}\\n{content}<|im_end|>\\n``.

    Args:
        system_prompt: Used when the conversation has no system turn (None: no system turn).
    """

    name = "chatml"
    required_tokens = ("<|im_start|>", "<|im_end|>")

    def __init__(self, system_prompt: str | None = None) -> None:
        self.system_prompt = system_prompt

    def end_of_turn(self, tokenizer: PreTrainedTokenizerBase) -> str:
        return "<|im_end|>"

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> list[Segment]:
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

    def _template(self, tokenizer: PreTrainedTokenizerBase) -> str:
        source = self.chat_template or tokenizer.chat_template
        if isinstance(source, dict):  # several named templates: the default one
            source = source.get("default")
        if not source:
            raise ValueError(
                f"Template 'tokenizer': the tokenizer ({type(tokenizer).__name__}) has no chat_template; "
                f"pass one or choose a named template ({', '.join(t for t in list_templates() if t != self.name)})."
            )
        if not _GENERATION_TAG.search(source):
            raise ValueError(
                "Template 'tokenizer': the chat_template has no {% generation %} ... {% endgeneration %} block, so "
                "transformers cannot tell which tokens are the assistant's answers. Wrap each assistant answer and "
                "its end-of-turn token in a generation block, or choose a named template "
                f"({', '.join(t for t in list_templates() if t != self.name)})."
            )
        return source

    def end_of_turn(self, tokenizer: PreTrainedTokenizerBase) -> str:
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
        last = [s for s in self.render(probe, tokenizer=tokenizer) if s.supervised][-1]
        return tokenizer.convert_ids_to_tokens(last.token_ids[-1])

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._template(tokenizer)
        if not is_single_token(tokenizer, IMAGE_PLACEHOLDER):
            raise ValueError(f"Template 'tokenizer' needs {IMAGE_PLACEHOLDER!r} to be a single token of the tokenizer.")

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
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
        image_id = (
            _tokenize_cached(tokenizer, IMAGE_PLACEHOLDER)[0] if is_single_token(tokenizer, IMAGE_PLACEHOLDER) else None
        )
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


# ---------------------------------------------------------------------------------------------------- encoding
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


def encode_segments(
    segments: Sequence[Segment],
    tokenizer: PreTrainedTokenizerBase,
    image_token_id: int,
    num_image_tokens: int,
) -> tuple[list[int], list[int], int]:
    """Tokenize segments into ``input_ids`` and ``labels`` built from the same pieces.

    Every ``<image>`` placeholder becomes ``num_image_tokens`` copies of ``image_token_id`` labelled -100, also inside
    a supervised segment.

    Args:
        segments: Output of :meth:`ChatTemplate.render`.
        tokenizer: The LM's tokenizer.
        image_token_id: Id that marks image positions in ``input_ids``.
        num_image_tokens: Tokens one image becomes after the vision tower and projector.

    Returns:
        (input_ids, labels, n_images).
    """
    # one tokenizer call for all text pieces of the conversation
    plan: list[tuple[Segment, list[str]]] = [
        (seg, seg.text.split(IMAGE_PLACEHOLDER) if seg.text is not None else []) for seg in segments
    ]
    flat = [p for _, pieces in plan for p in pieces if p]
    tokens = iter(_tokenize_pieces(tokenizer, flat))
    ids: list[int] = []
    labels: list[int] = []
    n_images = 0

    def add(toks: Sequence[int], supervised: bool) -> None:
        ids.extend(toks)
        labels.extend(toks if supervised else [IGNORE_INDEX] * len(toks))

    for seg, pieces in plan:
        if seg.special is not None:
            if seg.special not in SPECIAL_TOKENS:
                raise ValueError(f"Segment.special must be one of {SPECIAL_TOKENS}, got {seg.special!r}")
            tid = getattr(tokenizer, f"{seg.special}_token_id")
            if tid is None and seg.special == "eos":
                raise ValueError("The chat template ends answers with EOS, but the tokenizer defines no EOS token.")
            if tid is not None:
                add([tid], seg.supervised)
        if seg.token_ids:
            add(seg.token_ids, seg.supervised)
        for k, piece in enumerate(pieces):
            if k > 0:  # an image placeholder stood between pieces[k-1] and pieces[k]
                add([image_token_id] * num_image_tokens, False)
                n_images += 1
            if piece:
                add(next(tokens), seg.supervised)
    return ids, labels, n_images
