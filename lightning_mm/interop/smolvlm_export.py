"""``export_smolvlm_hf``: merge LoRA and write a folder that transformers' ``SmolVLMForConditionalGeneration`` (or
``Idefics3ForConditionalGeneration``) and ``AutoProcessor`` load with plain ``from_pretrained``.

The weights go through transformers' own model (:func:`~lightning_mm.interop.export.to_hf_model`, then
``save_pretrained``); the processor is transformers' SmolVLM / Idefics3 processor with the image-splitting settings of
the :class:`~lightning_mm.data.smolvlm_layout.SmolVLMLayout` given (tiles, global view, row/column markers), so that
``processor(text, images)`` writes the token ids and tiles the layout writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import Idefics3ImageProcessor, Idefics3Processor
from transformers.models.smolvlm import processing_smolvlm
from transformers.models.smolvlm.image_processing_smolvlm import SmolVLMImageProcessor
from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor
from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

from lightning_mm.data.smolvlm_layout import SmolVLMLayout
from lightning_mm.interop.export import save_hf_model

__all__ = ["export_smolvlm_hf", "smolvlm_image_processor_settings"]


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


def export_smolvlm_hf(
    module: Any,
    output_dir: str | Path,
    layout: SmolVLMLayout,
    dtype: torch.dtype | None = None,
    family: str = "smolvlm",
) -> Path:
    """Write ``module``'s network, tokenizer and processor in transformers' SmolVLM (or Idefics3) format.

    Every LoRA adapter is merged (into a copy: the module keeps its adapters).

    Args:
        module: A built :class:`~lightning_mm.MultimodalModule` of the SmolVLM family.
        output_dir: Directory to write (created if missing).
        layout: The image layout the model reads (:func:`lightning_mm.zoo.smolvlm.layout_for_spec`).
        dtype: Dtype of the written weights (None: as trained).
        family: ``smolvlm`` (``SmolVLMForConditionalGeneration``; its processor needs the ``num2words`` package to
            load) or ``idefics3`` (``Idefics3ForConditionalGeneration``, the released 256M/500M's class).

    Returns:
        The output directory.

    Raises:
        ValueError: for a network transformers' class cannot represent (naming why), or a layout whose tokens per
            tile differ from the network's.
    """
    out = Path(output_dir)
    _, network = save_hf_model(module, out, family, dtype)
    tower = network.vision
    settings = smolvlm_image_processor_settings(layout, tower.pixel_mean, tower.pixel_std)
    tokenizer = module.tokenizer
    chat_template = getattr(tokenizer, "chat_template", None)
    if family == "idefics3":
        processor = Idefics3Processor(
            Idefics3ImageProcessor(**settings),
            tokenizer,
            image_seq_len=layout.image_seq_len,
            chat_template=chat_template,
        )
    else:
        if processing_smolvlm.num2words is None:
            raise ImportError(
                "transformers' SmolVLMProcessor needs the `num2words` package (pip install num2words); or export with "
                "family='idefics3', the class the released SmolVLM-256M/500M checkpoints use."
            )
        processor = SmolVLMProcessor(
            SmolVLMImageProcessor(**settings),
            tokenizer,
            SmolVLMVideoProcessor(),
            image_seq_len=layout.image_seq_len,
            chat_template=chat_template,
        )
    processor.save_pretrained(out)
    return out
