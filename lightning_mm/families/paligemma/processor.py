"""transformers' processors of a PaliGemma or Gemma 3 export: an image processor resizing as
:class:`~lightning_mm.families.paligemma.layout.ResizedViewLayout` does (size, resampling, the tower's mean and std;
no crop) and a copy of the tokenizer naming the image tokens, so ``processor(text, images)`` writes the pixels and ids
the layout and the ``paligemma`` template write."""

from __future__ import annotations

import copy
from typing import Any

from transformers import PaliGemmaProcessor, PreTrainedTokenizerBase, SiglipImageProcessor

from lightning_mm.families.paligemma.layout import ResizedViewLayout

__all__ = ["named_tokenizer", "paligemma_hf_processor", "resized_view_settings"]


def resized_view_settings(layout: ResizedViewLayout, mean: Any, std: Any) -> dict[str, Any]:
    """Image processor settings of ``layout`` with the tower's ``mean`` and ``std``: resize to the layout's size,
    rescale by 1/255, normalise."""
    height, width = layout.size
    return {
        "do_resize": True,
        "size": {"height": int(height), "width": int(width)},
        "resample": layout.resample,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(m) for m in mean],
        "image_std": [float(s) for s in std],
        "do_convert_rgb": True,
    }


def named_tokenizer(tokenizer: PreTrainedTokenizerBase, tokens: dict[str, str]) -> PreTrainedTokenizerBase:
    """A copy of ``tokenizer`` naming ``tokens`` (e.g. ``{"image_token": "<image>"}``) as transformers' processors read
    them; the names are saved in its ``tokenizer_config.json``."""
    named = copy.deepcopy(tokenizer)
    named._set_model_specific_special_tokens(special_tokens=dict(tokens))  # transformers' hook for named tokens
    return named


def paligemma_hf_processor(
    tokenizer: PreTrainedTokenizerBase, layout: ResizedViewLayout, image_token: str, mean: Any, std: Any
) -> PaliGemmaProcessor:
    """transformers' ``PaliGemmaProcessor`` of a PaliGemma model (it adds its location and segmentation tokens to its
    copy of the tokenizer, as the released tokenizers have them).

    Args:
        tokenizer: The model's tokenizer.
        layout: The image layout the model reads.
        image_token: Text of the image token.
        mean: The tower's pixel mean.
        std: The tower's pixel standard deviation.
    """
    images = SiglipImageProcessor(**resized_view_settings(layout, mean, std))
    images.image_seq_length = int(layout.num_image_tokens)  # read by PaliGemmaProcessor, saved with the settings
    named = named_tokenizer(tokenizer, {"image_token": image_token})
    return PaliGemmaProcessor(images, named, chat_template=getattr(tokenizer, "chat_template", None))
