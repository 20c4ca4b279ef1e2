"""transformers' ``InternVLProcessor`` of an export: ``GotOcr2ImageProcessor`` tiling images as
:class:`~lightning_mm.families.internvl.layout.InternVLLayout` does (grid bounds, tile size, resampling, the tower's
mean and std) and a tokenizer that names InternVL's image tokens, so ``processor(text, images)`` writes the tiles and
ids the layout writes."""

from __future__ import annotations

import copy
from typing import Any

from transformers import (
    GotOcr2ImageProcessor,
    InternVLProcessor,
    InternVLVideoProcessor,
    PreTrainedTokenizerBase,
    ProcessorMixin,
)

from lightning_mm.families.internvl.layout import InternVLLayout

__all__ = ["internvl_hf_processor", "internvl_image_processor_settings"]

VIDEO_TOKEN = "<video>"


def internvl_image_processor_settings(layout: InternVLLayout, mean: Any, std: Any) -> dict[str, Any]:
    """``GotOcr2ImageProcessor`` settings reproducing ``layout`` with the tower's ``mean`` and ``std``.

    Raises:
        ValueError: for a layout that cuts images into several tiles without the thumbnail: transformers'
            ``GotOcr2ImageProcessor`` always appends it to several tiles (its ``crop_image_to_patches`` is called
            without ``use_thumbnail``, which no setting of the saved processor changes). With ``max_tiles`` 1 there is
            never a thumbnail, and the export is exact.
    """
    if not layout.settings.use_thumbnail and layout.settings.max_tiles > 1:
        raise ValueError(
            "image_tiling.use_thumbnail is false with max_tiles "
            f"{layout.settings.max_tiles}: transformers' InternVL image processor (GotOcr2ImageProcessor) always "
            "appends the thumbnail to several tiles, so it cannot prepare images as this model read them. Export "
            "with --format parts, or train with use_thumbnail true (or max_tiles 1)."
        )
    tile = int(layout.tile_size)
    return {
        "do_resize": True,
        "size": {"height": tile, "width": tile},
        "resample": layout.resample,
        "crop_to_patches": True,
        "min_patches": int(layout.settings.min_tiles),
        "max_patches": int(layout.settings.max_tiles),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(m) for m in mean],
        "image_std": [float(s) for s in std],
        "do_convert_rgb": True,
    }


def internvl_tokenizer(tokenizer: PreTrainedTokenizerBase, layout: InternVLLayout) -> PreTrainedTokenizerBase:
    """A copy of ``tokenizer`` naming the start, end and context image tokens (and the video token) as
    ``InternVLProcessor`` reads them (``start_image_token``, ...); they are saved in its ``tokenizer_config.json``."""
    named = copy.deepcopy(tokenizer)
    named._set_model_specific_special_tokens(  # transformers' own hook for named multimodal tokens
        special_tokens={
            "start_image_token": layout.settings.start_token,
            "end_image_token": layout.settings.end_token,
            "context_image_token": tokenizer.convert_ids_to_tokens(layout.image_token_id),
            "video_token": VIDEO_TOKEN,
        }
    )
    return named


def internvl_hf_processor(
    tokenizer: PreTrainedTokenizerBase, layout: InternVLLayout, mean: Any, std: Any
) -> ProcessorMixin:
    """transformers' processor of an InternVL model, tiling images as ``layout`` does.

    Args:
        tokenizer: The model's tokenizer (with the start / end / context tokens and its chat template).
        layout: The image layout the model reads.
        mean: The tower's pixel mean.
        std: The tower's pixel standard deviation.
    """
    images = GotOcr2ImageProcessor(**internvl_image_processor_settings(layout, mean, std))
    return InternVLProcessor(
        image_processor=images,
        tokenizer=internvl_tokenizer(tokenizer, layout),
        video_processor=InternVLVideoProcessor(),
        image_seq_length=int(layout.tokens_per_tile),
        chat_template=getattr(tokenizer, "chat_template", None),
    )
