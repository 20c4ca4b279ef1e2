"""The PaliGemma family: SigLIP (no pooling head) + one Linear + Gemma (2), with prefix-LM attention."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import tokenizer_with_template
from lightning_mm.data.contract import DataContract
from lightning_mm.families.base import Family, ImageSetup
from lightning_mm.families.paligemma.converter import PaliGemmaConverter
from lightning_mm.families.paligemma.layout import ResizedViewLayout, pil_resample
from lightning_mm.families.paligemma.processor import paligemma_hf_processor
from lightning_mm.models.attention_pattern import AttentionPattern

__all__ = ["PaliGemmaFamily"]


class PaliGemmaFamily(Family):
    """PaliGemma and PaliGemma 2 (transformers ``model_type`` ``paligemma``): one fixed-size view per image, the
    prefix (image tokens, BOS, prompt, newline) attended to whole, the answer causally."""

    name = "paligemma"
    description = "PaliGemma (2): SigLIP + Linear + Gemma (2), prefix-LM attention over image + prompt"
    converters = (PaliGemmaConverter(),)

    def attention_pattern(self, spec: Any) -> AttentionPattern:
        """Prefix LM: full attention over each sample's prefix, causal over its answer."""
        return AttentionPattern("prefix_lm")

    def image_layout(self, spec: Any, tokenizer: PreTrainedTokenizerBase, images: ImageSetup) -> ResizedViewLayout:
        """Each image resized to the tower's input with the tower's interpolation (``image_aspect`` is not read: no
        padding, no crop), then its image tokens alone (BOS and the prompt follow: the ``paligemma`` template)."""
        _, height, width = images.image_data_config["input_size"]
        resample = pil_resample(images.image_data_config, spec.name)
        return ResizedViewLayout(images.view_tokens, images.image_token_id, (height, width), resample)

    def hf_processor(self, contract: DataContract, network: nn.Module, hf_config: Any) -> Any:
        tower = network.vision
        return paligemma_hf_processor(
            tokenizer_with_template(contract.tokenizer, contract.template),
            contract.layout,
            contract.image_token,
            tower.pixel_mean,
            tower.pixel_std,
        )
