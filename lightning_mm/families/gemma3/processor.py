"""transformers' ``Gemma3Processor`` of a Gemma 3 export: ``Gemma3ImageProcessor`` resizing as the layout does
(pan-and-scan off) and a copy of the tokenizer naming ``boi_token``, ``eoi_token`` and ``image_token``."""

from __future__ import annotations

from typing import Any

from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerBase

from lightning_mm.families.gemma3.layout import BOI_TOKEN, EOI_TOKEN
from lightning_mm.families.paligemma.layout import ResizedViewLayout
from lightning_mm.families.paligemma.processor import named_tokenizer, resized_view_settings

__all__ = ["gemma3_hf_processor"]


def gemma3_hf_processor(
    tokenizer: PreTrainedTokenizerBase, layout: ResizedViewLayout, image_token: str, mean: Any, std: Any
) -> Gemma3Processor:
    """transformers' processor of a Gemma 3 model, one view per image as ``layout`` reads it.

    Args:
        tokenizer: The model's tokenizer (with the start / end of image tokens and its chat template).
        layout: The image layout the model reads.
        image_token: Text of the image (soft) token.
        mean: The tower's pixel mean.
        std: The tower's pixel standard deviation.
    """
    images = Gemma3ImageProcessor(**resized_view_settings(layout, mean, std), do_pan_and_scan=False)
    named = named_tokenizer(tokenizer, {"boi_token": BOI_TOKEN, "eoi_token": EOI_TOKEN, "image_token": image_token})
    return Gemma3Processor(
        images,
        named,
        chat_template=getattr(tokenizer, "chat_template", None),
        image_seq_length=int(layout.num_image_tokens),
    )
