"""Offline word tokenizers (``tokenizers`` wrapped as transformers fast tokenizers) and prompt decoding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def build_word_tokenizer(words: Iterable[str], chat_template: str = CHATML_JINJA) -> PreTrainedTokenizerBase:
    """A word-level tokenizer (split on whitespace) with ChatML special tokens and a real chat template.

    ``<pad>`` and ``<|im_end|>`` (EOS) are distinct; ``<image>`` is the image placeholder.

    Args:
        words: Vocabulary (duplicates ignored, order kept).
        chat_template: Jinja chat template stored with the tokenizer.

    Returns:
        A transformers fast tokenizer; ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` round-trip it.
    """
    vocab: dict[str, int] = {}
    for w in (*SPECIAL_TOKENS, "system", "user", "assistant", *words):
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=chat_template,
    )


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
