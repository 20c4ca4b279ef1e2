"""transformers' ``LlavaNextForConditionalGeneration`` and ``LlavaOnevisionForConditionalGeneration`` <-> our network.

Both are LLaVA (tower, ``mlp2x_gelu`` projector, causal LM) plus any-resolution tiling: ``image_grid_pinpoints``, a
learned ``image_newline`` (transformers' ``model.image_newline``, ours ``projector.image_newline``) and, for
OneVision, the ``vision_aspect_ratio`` token cap (``anyres_max_9``). Everything else, the tower, projector and LM
weights and the checks of what our network can compute, is LLaVA's (:class:`~lightning_mm.families.llava.converter.LlavaConverter`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PretrainedConfig,
)

from lightning_mm.families.llava.converter import LlavaConverter
from lightning_mm.families.llava_next.projector import AnyResProjector

__all__ = ["LlavaNextConverter", "LlavaOnevisionConverter"]

NEWLINE_OURS, NEWLINE_HF = "projector.image_newline", "model.image_newline"


class LlavaNextConverter(LlavaConverter):
    """Converter of transformers' LLaVA-NeXT (``model_type`` ``llava_next``)."""

    name = "llava_next"
    family = "llava_next"
    model_types = ("llava_next",)
    architectures = ("LlavaNextForConditionalGeneration",)
    hf_model_class = LlavaNextForConditionalGeneration
    hf_config_class: type[PretrainedConfig] = LlavaNextConfig
    label = "LLaVA-NeXT"

    # ------------------------------------------------------------ config -> spec
    def tiling(self, config: PretrainedConfig, source: str) -> dict[str, Any]:
        """``image_tiling`` spec field of a checkpoint with config ``config``."""
        pinpoints = [[int(h), int(w)] for h, w in config.image_grid_pinpoints]
        size = int(config.vision_config.image_size)
        bad = [p for p in pinpoints if p[0] % size or p[1] % size]
        if bad:
            raise ValueError(
                f"{source}: image_grid_pinpoints {bad} are not multiples of vision_config.image_size {size}; "
                "tiles would not cover the grid."
            )
        return {"grid_pinpoints": pinpoints}

    def spec_fields(self, config: PretrainedConfig, source: str, preprocessor: dict | None) -> dict[str, Any]:
        """LLaVA's spec fields plus ``image_tiling`` (see :meth:`LlavaConverter.spec_fields`)."""
        fields = super().spec_fields(config, source, preprocessor)
        fields["image_tiling"] = self.tiling(config, source)
        fields["description"] = fields["description"].replace("transformers LLaVA", f"transformers {self.label}")
        return fields

    # ------------------------------------------------------------ weights
    def normalize(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Saved layouts to module names; the newline is saved at the top level (``image_newline``)."""
        state = {(NEWLINE_HF if k == "image_newline" else k): v for k, v in state.items()}
        return super().normalize(state)

    def _convert(
        self, state: dict[str, torch.Tensor], network: nn.Module, to: str
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        src, dst = (NEWLINE_OURS, NEWLINE_HF) if to == "hf" else (NEWLINE_HF, NEWLINE_OURS)
        rest = {k: v for k, v in state.items() if k != src}
        out, left = super()._convert(rest, network, to)
        if src in state:
            out[dst] = state[src]
        return out, left

    # ------------------------------------------------------------ network -> transformers config
    def tiling_config(self, projector: AnyResProjector) -> dict[str, Any]:
        """transformers' config entries of the tiling."""
        if projector.geometry.max_tiles is not None:
            raise ValueError(
                f"transformers' {self.label} has no token cap; this network caps images at "
                f"{projector.geometry.max_tiles} tiles (write it as llava_onevision)."
            )
        return {"image_grid_pinpoints": [list(p) for p in projector.geometry.grid_pinpoints]}

    def hf_config(self, network: nn.Module) -> PretrainedConfig:
        """transformers' config of our network (LLaVA's, plus the tiling).

        Raises:
            ValueError: for a network without any-resolution tiling, or what LLaVA's config cannot represent.
        """
        if not isinstance(network.projector, AnyResProjector):
            raise ValueError(f"transformers' {self.label} needs a network with any-resolution tiling (image_tiling).")
        llava = super().hf_config(network).to_dict()
        keep = ("vision_config", "text_config", "image_token_index", "vision_feature_layer")
        keep += ("vision_feature_select_strategy", "projector_hidden_act", "multimodal_projector_bias")
        keep += ("tie_word_embeddings",)
        kwargs = {k: llava[k] for k in keep}
        return self.hf_config_class(**kwargs, **self.tiling_config(network.projector))


class LlavaOnevisionConverter(LlavaNextConverter):
    """Converter of transformers' LLaVA-OneVision (``model_type`` ``llava_onevision``), images only (no video)."""

    name = "llava_onevision"
    model_types = ("llava_onevision",)
    architectures = ("LlavaOnevisionForConditionalGeneration",)
    hf_model_class = LlavaOnevisionForConditionalGeneration
    hf_config_class = LlavaOnevisionConfig
    label = "LLaVA-OneVision"

    def tiling(self, config: PretrainedConfig, source: str) -> dict[str, Any]:
        """Pinpoints plus the token cap (``vision_aspect_ratio``)."""
        return {**super().tiling(config, source), "vision_aspect_ratio": config.vision_aspect_ratio}

    def tiling_config(self, projector: AnyResProjector) -> dict[str, Any]:
        """Pinpoints plus ``vision_aspect_ratio`` (``anyres_max_<N>``)."""
        cap = projector.geometry.max_tiles
        if cap is None:
            raise ValueError(
                f"transformers' {self.label} always caps images (vision_aspect_ratio anyres_max_<N>); this network has "
                "no cap (write it as llava_next)."
            )
        return {
            "image_grid_pinpoints": [list(p) for p in projector.geometry.grid_pinpoints],
            "vision_aspect_ratio": f"anyres_max_{cap}",
        }
