"""The InternVL 2.5 / 3 family: dynamic tiling into up to 12 tiles + a thumbnail, InternViT, pixel shuffle and a
normed MLP projector; transformers' ``InternVLForConditionalGeneration`` both ways."""

from __future__ import annotations

from typing import Any

from PIL import Image
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import tokenizer_with_template
from lightning_mm.data.contract import DataContract
from lightning_mm.families.base import Family, ImageSetup
from lightning_mm.families.internvl.converter import InternVLConverter
from lightning_mm.families.internvl.layout import InternVLLayout, TilingSettings
from lightning_mm.families.internvl.processor import internvl_hf_processor

__all__ = ["InternVLFamily"]


class InternVLFamily(Family):
    """InternVL 2.5 / 3 (transformers ``model_type`` ``internvl``).

    The spec's ``image_tiling`` holds the tiling (:class:`~lightning_mm.families.internvl.layout.TilingSettings`:
    ``min_tiles``, ``max_tiles``, ``use_thumbnail``, ``start_token``, ``end_token``; all optional).
    """

    name = "internvl"
    description = "InternVL 2.5 / 3: up to 12 tiles + a thumbnail, pixel shuffle 0.5, <img>...</img> around each image"
    converters = (InternVLConverter(),)

    def image_layout(self, spec: Any, tokenizer: PreTrainedTokenizerBase, images: ImageSetup) -> InternVLLayout:
        """:class:`~lightning_mm.families.internvl.layout.InternVLLayout` of the spec's tiling (``image_aspect`` is
        not read: the layout cuts the images).

        Raises:
            ValueError: for a tower input that is not square, or an interpolation PIL does not have.
        """
        _, height, width = images.image_data_config["input_size"]
        if height != width:
            raise ValueError(f"Model {spec.name!r}: InternVL tiles are square; the tower reads {height}x{width}.")
        interpolation = str(images.image_data_config.get("interpolation", "bicubic")).upper()
        if interpolation not in Image.Resampling.__members__:
            raise ValueError(f"Model {spec.name!r}: interpolation {interpolation.lower()!r} has no PIL equivalent.")
        return InternVLLayout(
            tokenizer,
            images.image_token_id,
            images.view_tokens,
            tile_size=int(height),
            settings=TilingSettings.from_spec(spec.image_tiling),
            resample=Image.Resampling[interpolation],
        )

    def image_tokens_label(self, spec: Any, view_tokens: int) -> str:
        return f"{view_tokens}/tile"

    def hf_processor(self, contract: DataContract, network: nn.Module, hf_config: Any) -> Any:
        tower = network.vision
        return internvl_hf_processor(
            tokenizer_with_template(contract.tokenizer, contract.template),
            contract.layout,
            tower.pixel_mean,
            tower.pixel_std,
        )
