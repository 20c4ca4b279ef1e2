"""The LLaVA-NeXT / LLaVA-OneVision family: any-resolution tiling (a base view plus the tiles of the best-fitting
grid, unpadded, a newline embedding after each row; OneVision caps the tokens with ``anyres_max_<N>``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import tokenizer_with_template
from lightning_mm.data.contract import DataContract
from lightning_mm.data.layout import ImageLayout
from lightning_mm.errors import ConfigError
from lightning_mm.families.base import Family, ImageSetup
from lightning_mm.families.llava_next.converter import LlavaNextConverter, LlavaOnevisionConverter
from lightning_mm.families.llava_next.layout import AnyResLayout
from lightning_mm.families.llava_next.processor import anyres_hf_processor
from lightning_mm.families.llava_next.projector import AnyResProjector, tiling_geometry, tiling_projector
from lightning_mm.models.vision import VisionTower
from lightning_mm.zoo.spec import vision_tower

__all__ = ["LlavaNextFamily"]


class LlavaNextFamily(Family):
    """LLaVA-NeXT (``llava_next``) and LLaVA-OneVision (``llava_onevision``): the spec's ``image_tiling`` tiles each
    image; a network is written as OneVision when its tiling caps the tokens, as NeXT otherwise."""

    name = "llava_next"
    description = "LLaVA-NeXT / LLaVA-OneVision: any-resolution tiling with a newline embedding per row"
    converters = (LlavaNextConverter(), LlavaOnevisionConverter())

    def build_projector(self, spec: Any, tower: VisionTower, text_dim: int) -> nn.Module:
        if spec.image_tiling is None:
            raise ConfigError(
                f"Model {spec.name!r} of family 'llava_next' sets no image_tiling: give its grid_pinpoints "
                "(model_overrides.image_tiling)."
            )
        return tiling_projector(super().build_projector(spec, tower, text_dim), tower, spec.image_tiling, text_dim)

    def view_tokens(self, projector: nn.Module, features: torch.Tensor) -> int:
        """Tokens of one tile: its features and the newline that ends its row."""
        return int(projector.assemble(projector(features)).shape[0])  # (N + 1, D)

    def image_layout(self, spec: Any, tokenizer: PreTrainedTokenizerBase, images: ImageSetup) -> ImageLayout:
        """:class:`~lightning_mm.families.llava_next.layout.AnyResLayout` of the spec's tiling (``image_aspect`` is
        not read: the tiling cuts the images)."""
        with torch.device("meta"):
            geometry = tiling_geometry(vision_tower(spec), spec.image_tiling)
        return AnyResLayout(geometry, images.image_data_config, images.image_token_id)

    def image_tokens_label(self, spec: Any, view_tokens: int) -> str:
        return f"{view_tokens - 1}/tile"  # one tile's tokens, without its row's newline

    def hf_model_type(self, network: nn.Module) -> str:
        projector = network.projector
        if not isinstance(projector, AnyResProjector):
            raise ValueError("A llava_next network has an AnyResProjector; this one has none.")
        return "llava_next" if projector.geometry.max_tiles is None else "llava_onevision"

    def hf_processor(self, contract: DataContract, network: nn.Module, hf_config: Any) -> Any:
        return anyres_hf_processor(
            network,
            tokenizer_with_template(contract.tokenizer, contract.template),
            contract.image_data_config,
            contract.image_token,
        )
