"""transformers' SmolVLM / Idefics3 processor of an export, with the image-splitting settings of a
:class:`~lightning_mm.families.smolvlm.layout.SmolVLMLayout` (tiles, global view, row/column markers), so that
``processor(text, images)`` writes the token ids and tiles the layout writes."""

from __future__ import annotations

from typing import Any

from PIL import Image
from transformers import Idefics3ImageProcessor, Idefics3Processor, PreTrainedTokenizerBase, ProcessorMixin
from transformers.models.smolvlm import processing_smolvlm
from transformers.models.smolvlm.image_processing_smolvlm import SmolVLMImageProcessor
from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor
from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

from lightning_mm.families.smolvlm.layout import SmolVLMLayout

__all__ = ["smolvlm_hf_processor", "smolvlm_image_processor_settings"]


def smolvlm_image_processor_settings(layout: SmolVLMLayout, mean: Any, std: Any) -> dict[str, Any]:
    """transformers image-processor settings reproducing ``layout`` with the tower's ``mean`` and ``std``."""
    resample = Image.Resampling(layout.resample)
    return {
        "do_resize": layout.longest_edge is not None,
        "size": {"longest_edge": int(layout.longest_edge or layout.tile_size)},
        "max_image_size": {"longest_edge": int(layout.tile_size)},
        "do_image_splitting": bool(layout.split),
        "resample": resample,
        "image_mean": [float(m) for m in mean],
        "image_std": [float(s) for s in std],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }


def smolvlm_hf_processor(
    tokenizer: PreTrainedTokenizerBase, layout: SmolVLMLayout, mean: Any, std: Any, model_type: str = "idefics3"
) -> ProcessorMixin:
    """transformers' processor of a SmolVLM-family model, splitting images as ``layout`` does.

    Args:
        tokenizer: The model's tokenizer (with the marker tokens and its chat template).
        layout: The image layout the model reads.
        mean: The tower's pixel mean.
        std: The tower's pixel standard deviation.
        model_type: ``idefics3`` (``Idefics3Processor``, the released SmolVLM-256M/500M's class) or ``smolvlm``
            (``SmolVLMProcessor``, which needs the ``num2words`` package to load).
    """
    settings = smolvlm_image_processor_settings(layout, mean, std)
    chat_template = getattr(tokenizer, "chat_template", None)
    if model_type == "idefics3":
        return Idefics3Processor(
            Idefics3ImageProcessor(**settings),
            tokenizer,
            image_seq_len=layout.image_seq_len,
            chat_template=chat_template,
        )
    if processing_smolvlm.num2words is None:
        raise ImportError(
            "transformers' SmolVLMProcessor needs the `num2words` package (pip install num2words); or export as "
            "model_type='idefics3', the class the released SmolVLM-256M/500M checkpoints use."
        )
    return SmolVLMProcessor(
        SmolVLMImageProcessor(**settings),
        tokenizer,
        SmolVLMVideoProcessor(),
        image_seq_len=layout.image_seq_len,
        chat_template=chat_template,
    )
