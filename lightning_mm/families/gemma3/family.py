"""The Gemma 3 family: SigLIP so400m at 896 px (no pooling head) + pooled, normed projection + Gemma 3, the tokens of
each image attending to each other whole."""

from __future__ import annotations

import re
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import tokenizer_with_template
from lightning_mm.data.contract import DataContract
from lightning_mm.families.base import Family, ImageSetup
from lightning_mm.families.gemma3.converter import Gemma3Converter
from lightning_mm.families.gemma3.layout import BOI_TOKEN, gemma3_layout
from lightning_mm.families.gemma3.processor import gemma3_hf_processor
from lightning_mm.families.gemma3.projector import Gemma3Projector
from lightning_mm.families.paligemma.layout import ResizedViewLayout, pil_resample
from lightning_mm.models.attention_pattern import AttentionPattern
from lightning_mm.models.vision import VisionTower

__all__ = ["Gemma3Family"]

_PROJECTOR = re.compile(r"gemma3_pool(\d+)")


class Gemma3Family(Family):
    """Gemma 3 (transformers ``model_type`` ``gemma3``): one 896 px view per image (pan-and-scan off), 256 tokens."""

    name = "gemma3"
    description = (
        "Gemma 3: SigLIP so400m 896 px + avg-pool/RMSNorm/linear to 256 tokens + Gemma 3; image tokens bidirectional"
    )
    converters = (Gemma3Converter(),)

    def build_projector(self, spec: Any, tower: VisionTower, text_dim: int) -> nn.Module:
        """:class:`~lightning_mm.families.gemma3.projector.Gemma3Projector` for ``gemma3_pool<tokens>``."""
        match = _PROJECTOR.fullmatch(spec.projector)
        if match is None:
            raise ValueError(
                f"Gemma 3's projector is `gemma3_pool<tokens>` (e.g. gemma3_pool256); got {spec.projector!r}."
            )
        eps = float(tower.model.norm.eps)
        grid = int(tower.model.patch_embed.grid_size[0])
        return Gemma3Projector(tower.hidden_size, text_dim, int(match.group(1)), eps=eps, patch_grid=grid)

    def attention_pattern(self, spec: Any) -> AttentionPattern:
        """Causal, plus full attention among the tokens of each image."""
        return AttentionPattern("image_blocks")

    def image_layout(self, spec: Any, tokenizer: PreTrainedTokenizerBase, images: ImageSetup) -> ResizedViewLayout:
        """Each image resized to the tower's input with the tower's interpolation (``image_aspect`` is not read: no
        padding, no crop), framed by ``\\n\\n<start_of_image>`` ... ``<end_of_image>\\n\\n``
        (:func:`~lightning_mm.families.gemma3.layout.gemma3_layout`)."""
        _, height, width = images.image_data_config["input_size"]
        resample = pil_resample(images.image_data_config, spec.name)
        return gemma3_layout(tokenizer, images.image_token_id, images.view_tokens, (height, width), resample)

    def hf_processor(self, contract: DataContract, network: nn.Module, hf_config: Any) -> Any:
        tower = network.vision
        return gemma3_hf_processor(
            tokenizer_with_template(contract.tokenizer, contract.template, BOI_TOKEN),  # it expands <start_of_image>
            contract.layout,
            contract.image_token,
            tower.pixel_mean,
            tower.pixel_std,
        )
