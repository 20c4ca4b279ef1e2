"""transformers' ``SmolVLMForConditionalGeneration`` / ``Idefics3ForConditionalGeneration`` <-> our network.

Both families are one network: a SigLIP-like ViT read at its last block through ``post_layernorm`` (no attention-pool
head, no class token; every tile is a full ``image_size`` square, so the NaViT-style position ids of transformers are
the plain ``0..N-1`` of timm's ``pos_embed``), Idefics3's pixel-shuffle connector (``pixel_shuffle{s}_linear``, a
Linear without bias) and a Llama decoder. Tiles are encoded independently and their features follow each other in the
order of the image tokens, so the composed :class:`~lightning_mm.models.VisionLanguageModel` computes what transformers
computes once the data writes the tiles and marker tokens of :class:`~lightning_mm.families.smolvlm.layout.SmolVLMLayout`.

Weight names (transformers 5 modules, and what ``save_pretrained`` of transformers 4 and 5 writes):
``model.vision_model.*`` (SigLIP names without the head), ``model.connector.modality_projection.proj.weight``,
``model.text_model.*`` and ``lm_head.weight``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3VisionConfig,
    PretrainedConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMVisionConfig,
)

from lightning_mm.interop.converter import Converter
from lightning_mm.interop.hf_config import TEMPLATE_KEY, image_overlay, text_model_config
from lightning_mm.interop.keys import KeyRule, convert_network_state
from lightning_mm.interop.towers import TowerFamily, _encoder_rules
from lightning_mm.models.token_reduction import PIXEL_SHUFFLE_FACTORS, PixelShuffleProjector

__all__ = ["IDEFICS3_VISION", "SMOLVLM_VISION", "SmolVLMConverter"]

VISION, CONNECTOR, LANGUAGE = "model.vision_model.", "model.connector.modality_projection.", "model.text_model."
PROJECTOR_RULES = (KeyRule.rename("projector.proj.weight", CONNECTOR + "proj.weight"),)
TEMPLATE = "smolvlm"


@dataclass(frozen=True)
class HeadlessSiglipFamily(TowerFamily):
    """A SigLIP-like ViT without the attention-pool head (Idefics3 / SmolVLM vision transformers)."""

    def timm_kwargs(self, config: PretrainedConfig) -> dict[str, Any]:
        """timm keyword arguments of ``config``'s geometry, with no pooling head (``global_pool=""``)."""
        return {**super().timm_kwargs(config), "global_pool": ""}


def _rules() -> tuple[KeyRule, ...]:
    return (
        KeyRule.rename("pos_embed", "embeddings.position_embedding.weight", lead=1),  # (1, N, D) <-> (N, D)
        KeyRule.rename("patch_embed.proj.{p}", "embeddings.patch_embedding.{p}"),
        *_encoder_rules(),  # blocks, and norm <-> post_layernorm
    )


# not in the registry of LLaVA's towers (lightning_mm.interop.towers): transformers' LLaVA has no such tower, and the
# timm layout is SigLIP's, so these families are looked up by this converter only
def _family(model_type: str, config_class: type) -> HeadlessSiglipFamily:
    return HeadlessSiglipFamily(
        name=model_type,
        hf_model_type=model_type,
        hf_config_class=config_class,
        timm_base="vit_base_patch16_siglip_224",
        num_prefix_tokens=0,
        layer_norm_eps=1e-6,
        rules=_rules(),
    )


SMOLVLM_VISION = _family("smolvlm_vision", SmolVLMVisionConfig)
IDEFICS3_VISION = _family("idefics3_vision", Idefics3VisionConfig)
_FAMILIES = {"smolvlm": (SmolVLMConfig, SmolVLMForConditionalGeneration, SMOLVLM_VISION)}
_FAMILIES["idefics3"] = (Idefics3Config, Idefics3ForConditionalGeneration, IDEFICS3_VISION)


class SmolVLMConverter(Converter):
    """Converter of transformers' SmolVLM (``model_type`` ``smolvlm``) or Idefics3 (``idefics3``): one mapping.

    Args:
        model_type: ``smolvlm`` or ``idefics3``.
    """

    family = "smolvlm"

    def __init__(self, model_type: str = "smolvlm") -> None:
        if model_type not in _FAMILIES:
            raise ValueError(f"Unknown SmolVLM-family model_type {model_type!r}; one of {', '.join(_FAMILIES)}.")
        self.name = model_type
        self.model_types = (model_type,)
        self.config_class, self.hf_model_class, self.tower = _FAMILIES[model_type]
        self.architectures = (self.hf_model_class.__name__,)

    # ------------------------------------------------------------ config -> spec
    def spec_fields(self, config: PretrainedConfig, source: str, preprocessor: dict | None) -> dict[str, Any]:
        """:class:`~lightning_mm.zoo.ModelSpec` fields of the checkpoint ``source`` with config ``config``.

        Raises:
            ValueError: for a scale factor without a registered pixel-shuffle projector or a tile grid it does not
                divide, naming the config key.
        """
        vision = config.vision_config
        if vision.model_type != self.tower.hf_model_type:
            raise ValueError(
                f"{source}: vision_config.model_type={vision.model_type!r}; transformers' {self.name} uses "
                f"{self.tower.hf_model_type!r}."
            )
        family = self.tower
        kwargs = family.timm_kwargs(vision)
        overlay = image_overlay(preprocessor)
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        scale = int(config.scale_factor)
        if scale not in PIXEL_SHUFFLE_FACTORS:
            raise ValueError(
                f"{source}: scale_factor={scale}; supported: {', '.join(map(str, PIXEL_SHUFFLE_FACTORS))}."
            )
        side = int(vision.image_size) // int(vision.patch_size)
        if side % scale:
            raise ValueError(f"{source}: scale_factor={scale} does not divide the {side}x{side} patch grid.")
        text, llm_config = config.text_config, text_model_config(config)
        return {
            "vision_model": family.timm_base,
            "vision_kwargs": kwargs,
            "feature_layer": -1,
            "feature_norm": True,
            "drop_prefix_tokens": True,
            "projector": f"pixel_shuffle{scale}_linear",
            "llm": None,
            "llm_config": llm_config,
            "tokenizer": source,
            "checkpoint": source,
            "template": getattr(config, TEMPLATE_KEY, None) or TEMPLATE,
            "image_token_id": int(config.image_token_id),
            "family": self.family,
            "description": f"transformers {self.name} checkpoint {source} ({text.model_type})",
        }

    # ------------------------------------------------------------ weights
    def _convert(
        self, state: dict[str, torch.Tensor], network: nn.Module, to: str
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        llm = ((f"llm.{network.llm.base_model_prefix}.", LANGUAGE), ("llm.lm_head.", "lm_head."))
        return convert_network_state(state, to, ("vision.model.", VISION), self.tower.rules, PROJECTOR_RULES, llm)

    # ------------------------------------------------------------ network -> transformers config
    def hf_config(self, network: nn.Module) -> PretrainedConfig:
        """transformers' config of our network.

        Raises:
            ValueError: naming what transformers' class cannot represent (feature layer, final norm, projector).
        """
        tower = network.vision
        if tower.block_index != tower.depth - 1 or not tower.feature_norm:
            raise ValueError(
                f"transformers' {self.name} reads the last vision block through its final norm; this tower reads block "
                f"{tower.block_index} of {tower.depth} (feature_norm={tower.feature_norm})."
            )
        projector = network.projector
        if not isinstance(projector, PixelShuffleProjector) or not isinstance(projector.proj, nn.Linear):
            raise ValueError(
                f"transformers' {self.name} connector is pixel shuffle + one Linear (pixel_shuffle<s>_linear); "
                f"got {type(projector).__name__}."
            )
        text = network.llm.config
        return self.config_class(
            vision_config=self.tower.hf_config(tower.model).to_dict(),
            text_config=text.to_dict(),
            scale_factor=int(projector.scale_factor),
            image_token_id=int(network.image_token_id),
            tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        )
