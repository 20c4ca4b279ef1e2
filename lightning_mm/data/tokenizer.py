"""Tokenizers built offline with the ``tokenizers`` library and wrapped as transformers fast tokenizers."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = ["CHATML_JINJA", "build_word_tokenizer"]

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
