"""Offline word tokenizers (``tokenizers`` wrapped as transformers fast tokenizers) and prompt decoding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = ["CHATML_JINJA", "build_word_tokenizer", "decode_prompt"]

# ChatML with `{% generation %}` spans, so transformers can return the assistant-token mask.
CHATML_JINJA = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}\n"
    "{% else %}{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>")


def build_word_tokenizer(
    words: Iterable[str], chat_template: str = CHATML_JINJA, special_ids: Mapping[str, int] | None = None
) -> PreTrainedTokenizerBase:
    """A word-level tokenizer (split on whitespace) with ChatML special tokens and a real chat template.

    ``<pad>`` and ``<|im_end|>`` (EOS) are distinct; ``<image>`` is the image placeholder.

    Args:
        words: Vocabulary (duplicates ignored, order kept).
        chat_template: Jinja chat template stored with the tokenizer.
        special_ids: Special tokens at fixed ids past the vocabulary, as a model's embedding table expects them
            (a Gemma 3 checkpoint's ``<start_of_image>`` ...); the ids between the vocabulary and them hold reserved
            tokens ``<unused0>``, ``<unused1>``, ... A token already at its id stays; one of the ChatML special
            tokens asked elsewhere moves there.

    Returns:
        A transformers fast tokenizer; ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` round-trip it.

    Raises:
        ValueError: for an id inside the vocabulary, or two tokens at one id, naming the token and the id.
    """
    special_ids = dict(special_ids or {})
    vocab: dict[str, int] = {}
    for w in (*SPECIAL_TOKENS, "system", "user", "assistant", *words):
        vocab.setdefault(w, len(vocab))
    moved = {t: i for t, i in special_ids.items() if vocab.get(t) != i}
    if moved:
        specials = [t for t in SPECIAL_TOKENS if t not in moved]
        vocab = {}
        for w in (*specials, "system", "user", "assistant", *words):
            if w not in moved:
                vocab.setdefault(w, len(vocab))
        vocab = _place(vocab, moved)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens([*SPECIAL_TOKENS, *(t for t in special_ids if t not in SPECIAL_TOKENS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=chat_template,
    )


def _place(vocab: dict[str, int], special_ids: Mapping[str, int]) -> dict[str, int]:
    """``vocab`` grown with ``special_ids`` at their ids, reserved ``<unusedN>`` tokens filling the gaps."""
    by_id: dict[int, str] = {}
    for token, token_id in sorted(special_ids.items(), key=lambda item: item[1]):
        if token_id < len(vocab):
            raise ValueError(
                f"Special token {token!r} at id {token_id}: ids below {len(vocab)} hold the vocabulary "
                f"({next(t for t, i in vocab.items() if i == token_id)!r} is {token_id})."
            )
        if token_id in by_id:
            raise ValueError(f"Special tokens {by_id[token_id]!r} and {token!r} both at id {token_id}.")
        by_id[token_id] = token
    grown = dict(vocab)
    for token_id in range(len(vocab), max(by_id, default=len(vocab) - 1) + 1):
        grown[by_id.get(token_id, f"<unused{token_id - len(vocab)}>")] = token_id
    return grown


def decode_prompt(
    tokenizer: PreTrainedTokenizerBase, input_ids: Sequence[int], image_token_id: int, placeholder: str = "<image>"
) -> str:
    """The text of a tokenized prompt, each run of image tokens written as one image placeholder.

    Special tokens (the chat template's role markers) are kept, so the text is the prompt the model saw. An image
    token of the vocabulary is decoded as the tokenizer writes it; an id outside it (LLaVA's original code uses -200)
    becomes ``placeholder``.

    Args:
        tokenizer: The tokenizer that encoded the prompt.
        input_ids: Token ids of one prompt, without padding.
        image_token_id: Id of the image placeholder token.
        placeholder: What an image span becomes when its id is not a token of the vocabulary.
    """
    ids = [int(t) for k, t in enumerate(input_ids) if t != image_token_id or k == 0 or input_ids[k - 1] != t]
    if 0 <= image_token_id < len(tokenizer):
        return tokenizer.decode(ids, skip_special_tokens=False)
    pieces: list[list[int]] = [[]]
    for token in ids:
        if token == image_token_id:
            pieces.append([])
        else:
            pieces[-1].append(token)
    return placeholder.join(tokenizer.decode(p, skip_special_tokens=False) for p in pieces)
