"""The LLaVA-1.5 family: one fixed-size view per image, an MLP projector, transformers' ``LlavaForConditionalGeneration``.

Every model that reads each image as one resized view belongs here (the quickstart's ``tiny``, the miniatures of each
tower kind, the SigLIP / DINOv2 + Qwen2 pairings): the defaults of :class:`~lightning_mm.families.Family`, plus the
LLaVA converter and processor.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import LlavaProcessor

from lightning_mm.data.chat_template import tokenizer_with_template
from lightning_mm.data.contract import DataContract
from lightning_mm.errors import ConfigError
from lightning_mm.families.base import Family
from lightning_mm.families.llava.converter import LlavaConverter
from lightning_mm.families.llava.processor import hf_image_processor, hf_processor
from lightning_mm.models.vision import VisionTower

__all__ = ["LlavaFamily"]


class LlavaFamily(Family):
    """LLaVA-1.5 and every fixed-size-view model (transformers ``model_type`` ``llava``)."""

    name = "llava"
    description = "LLaVA-1.5 and fixed-size-view models: one resized view per image, MLP projector"
    converters = (LlavaConverter(),)

    def build_projector(self, spec: Any, tower: VisionTower, text_dim: int) -> nn.Module:
        if spec.image_tiling is not None:
            raise ConfigError(
                f"Model {spec.name!r}: image_tiling is read by the 'llava_next' family, but its family is 'llava': set "
                "`family: llava_next` with it (model_overrides)."
            )
        return super().build_projector(spec, tower, text_dim)

    def hf_processor(self, contract: DataContract, network: nn.Module, hf_config: Any) -> LlavaProcessor:
        """``LlavaProcessor``: the tower's image processor with the aspect mode the model was trained with, each image
        token expanded to the tower's token count."""
        tower = network.vision
        return hf_processor(
            tokenizer_with_template(contract.tokenizer, contract.template),
            hf_image_processor(contract.image_data_config, contract.image_aspect),
            patch_size=int(tower.model.patch_embed.patch_size[0]),
            select_strategy=hf_config.vision_feature_select_strategy,
            num_prefix_tokens=tower.num_prefix_tokens,
            image_token=contract.image_token,
        )
