"""Gemma 3's image layout: one view per image (pan-and-scan off) resized to 896 px, framed as ``Gemma3Processor``
writes it.

``Gemma3Processor`` replaces each ``<start_of_image>`` of the text by ``\\n\\n<start_of_image>`` + the image token
(``<image_soft_token>``) ``mm_tokens_per_image`` times + ``<end_of_image>\\n\\n``; ``Gemma3ImageProcessor`` resizes the
image to the tower's square input (bilinear in the released models), rescales by 1/255 and normalises with
mean = std = 0.5 (:class:`~lightning_mm.families.paligemma.layout.ResizedViewLayout`). The ``\\n\\n`` ids are those of
the text ``\\n\\n`` tokenized alone: where the text around an image ends or starts with a newline, transformers
tokenizes the joined text, which a merging tokenizer (Gemma's) may write as one longer newline token.
"""

from __future__ import annotations

from PIL import Image
from transformers import PreTrainedTokenizerBase

from lightning_mm.families.paligemma.layout import ResizedViewLayout

__all__ = ["BOI_TOKEN", "EOI_TOKEN", "IMAGE_TOKEN", "NEWLINES", "gemma3_layout"]

BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
NEWLINES = "\n\n"


def gemma3_layout(
    tokenizer: PreTrainedTokenizerBase,
    image_token_id: int,
    num_image_tokens: int,
    size: tuple[int, int],
    resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> ResizedViewLayout:
    """The layout of a Gemma 3 model.

    Args:
        tokenizer: The model's tokenizer, holding ``<start_of_image>`` and ``<end_of_image>``.
        image_token_id: Id of the image token.
        num_image_tokens: Tokens one image becomes (256 in the released models).
        size: (height, width) the tower reads.
        resample: PIL filter of the resize.

    Raises:
        ValueError: when the tokenizer lacks the start or end token.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in (BOI_TOKEN, EOI_TOKEN) if t not in vocab]
    if missing:
        raise ValueError(f"Gemma 3 image layout: the tokenizer lacks {missing}; add them as special tokens.")
    newlines = tokenizer.encode(NEWLINES, add_special_tokens=False)
    return ResizedViewLayout(
        num_image_tokens,
        image_token_id,
        size,
        resample,
        before=[*newlines, vocab[BOI_TOKEN]],
        after=[vocab[EOI_TOKEN], *newlines],
    )
