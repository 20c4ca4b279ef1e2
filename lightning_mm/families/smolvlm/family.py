"""The SmolVLM / Idefics3 family: images resized to a longest edge, split into square tiles plus a global view, each
tile pixel-shuffled into a few tokens and written with row/column marker tokens."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import tokenizer_with_template
from lightning_mm.data.contract import DataContract
from lightning_mm.data.layout import ImageLayout
from lightning_mm.families.base import Family, ImageSetup
from lightning_mm.families.smolvlm.converter import SmolVLMConverter
from lightning_mm.families.smolvlm.processor import smolvlm_hf_processor
from lightning_mm.families.smolvlm.settings import layout_for_spec

__all__ = ["SmolVLMFamily"]


class SmolVLMFamily(Family):
    """SmolVLM and Idefics3 (transformers ``model_type`` ``idefics3``, written by default: the released SmolVLM-256M /
    500M's class; or ``smolvlm``)."""

    name = "smolvlm"
    description = "SmolVLM / Idefics3: image splitting into tiles + a global view, pixel shuffle, row/column markers"
    converters = (SmolVLMConverter("idefics3"), SmolVLMConverter("smolvlm"))

    def image_layout(self, spec: Any, tokenizer: PreTrainedTokenizerBase, images: ImageSetup) -> ImageLayout:
        """:class:`~lightning_mm.families.smolvlm.layout.SmolVLMLayout` of the spec's image-processor settings
        (``image_aspect`` is not read: the layout cuts the images)."""
        return layout_for_spec(spec, tokenizer, images.view_tokens)

    def image_tokens_label(self, spec: Any, view_tokens: int) -> str:
        return f"{view_tokens}/view"

    def hf_processor(self, contract: DataContract, network: nn.Module, hf_config: Any) -> Any:
        tower = network.vision
        return smolvlm_hf_processor(
            tokenizer_with_template(contract.tokenizer, contract.template),
            contract.layout,
            tower.pixel_mean,
            tower.pixel_std,
            model_type=hf_config.model_type,
        )
