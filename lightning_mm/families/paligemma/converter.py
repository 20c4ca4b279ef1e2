"""transformers' ``PaliGemmaForConditionalGeneration`` <-> our network: spec from its config, weight names both ways.

PaliGemma (2) is a SigLIP ViT read at its last block through ``post_layernorm`` (no attention-pool head,
``vision_use_head=False``), one Linear with bias (``multi_modal_projector.linear``) and a Gemma (2) decoder whose prefix
(image tokens, BOS, prompt, newline) attends to itself whole: the ``prefix_lm`` attention pattern
(:mod:`lightning_mm.models.attention_pattern`). transformers 5 scales the text embeddings inside Gemma's embedding
module and leaves the image features as the projector writes them, which is what our network does (the splice writes
the projector's output next to the scaled text embeddings). Positions: transformers counts PaliGemma's from 1, ours
from 0; rotary embeddings depend only on the differences, so the outputs agree.

Weight names: transformers 5 modules ``model.vision_tower.*``, ``model.multi_modal_projector.*``,
``model.language_model.*``, ``lm_head.*``; saved checkpoints ``vision_tower.*``, ``multi_modal_projector.*``,
``language_model.model.*`` (LLaVA's layouts, read by the same normalisation).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PretrainedConfig

from lightning_mm.families.llava.converter import LlavaConverter
from lightning_mm.interop.hf_config import TEMPLATE_KEY, image_overlay, text_model_config
from lightning_mm.interop.keys import KeyRule, convert_network_state
from lightning_mm.interop.towers import SIGLIP, tower_for_timm

__all__ = ["PROJECTOR", "HeadlessSiglipConverter", "PaliGemmaConverter", "check_headless_siglip"]

VISION, PROJECTOR, LANGUAGE = "model.vision_tower.", "model.multi_modal_projector.", "model.language_model."


def check_headless_siglip(config: PretrainedConfig, source: str) -> dict[str, Any]:
    """timm keyword arguments of a SigLIP vision config without its pooling head.

    Raises:
        ValueError: naming ``vision_config.model_type`` or ``vision_config.vision_use_head`` when they differ.
    """
    if config.model_type != SIGLIP.hf_model_type:
        raise ValueError(f"{source}: vision_config.model_type={config.model_type!r}; expected 'siglip_vision_model'.")
    if getattr(config, "vision_use_head", False):
        raise ValueError(f"{source}: vision_config.vision_use_head=True; the tower is read without its pooling head.")
    return SIGLIP.timm_kwargs(config)


class HeadlessSiglipConverter(LlavaConverter):
    """What PaliGemma and Gemma 3 share: a headless SigLIP tower read through ``post_layernorm``, the LM renamed whole,
    LLaVA's saved layouts. Subclasses set the names, the projector rules and the config."""

    projector_rules: tuple[KeyRule, ...] = ()

    def _convert(self, state: dict, network: nn.Module, to: str) -> tuple[dict, list[str]]:
        tower = tower_for_timm(network.vision.model, network.vision.model_name)
        llm = ((self._llm_prefix(network), LANGUAGE), ("llm.lm_head.", "lm_head."))
        return convert_network_state(state, to, ("vision.model.", VISION), tower.rules, self.projector_rules, llm)

    def _check_tower(self, network: nn.Module) -> PretrainedConfig:
        """transformers' vision config of our tower, which must be read at its last block through its final norm."""
        tower = network.vision
        if tower.block_index != tower.depth - 1 or not tower.feature_norm:
            raise ValueError(
                f"transformers' {self.name} reads the last vision block through post_layernorm; this tower reads block "
                f"{tower.block_index} of {tower.depth} (feature_norm={tower.feature_norm})."
            )
        return tower_for_timm(tower.model, tower.model_name).hf_config(tower.model)

    def _tower_fields(self, config: PretrainedConfig, source: str, preprocessor: dict | None) -> dict[str, Any]:
        kwargs = check_headless_siglip(config.vision_config, source)
        overlay = image_overlay(preprocessor)
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        return {
            "vision_model": SIGLIP.timm_base,
            "vision_kwargs": kwargs,
            "feature_layer": -1,
            "feature_norm": True,
            "drop_prefix_tokens": True,
        }


class PaliGemmaConverter(HeadlessSiglipConverter):
    """Converter of transformers' PaliGemma (``model_type`` ``paligemma``; PaliGemma 2 has a Gemma 2 decoder)."""

    name = "paligemma"
    family = "paligemma"
    model_types = ("paligemma",)
    architectures = ("PaliGemmaForConditionalGeneration",)
    hf_model_class = PaliGemmaForConditionalGeneration
    projector_rules = (KeyRule.rename("projector.0.{p}", PROJECTOR + "linear.{p}"),)

    def spec_fields(self, config: PretrainedConfig, source: str, preprocessor: dict | None) -> dict[str, Any]:
        """:class:`~lightning_mm.zoo.ModelSpec` fields of the checkpoint ``source`` with config ``config``.

        Raises:
            ValueError: naming the config key our network cannot compute like transformers (a pooling head,
                ``projection_dim`` other than the LM's width).
        """
        text = config.text_config
        if int(config.vision_config.projection_dim) != int(text.hidden_size):
            raise ValueError(
                f"{source}: vision_config.projection_dim={config.vision_config.projection_dim} differs from "
                f"text_config.hidden_size={text.hidden_size}."
            )
        return {
            **self._tower_fields(config, source, preprocessor),
            "projector": "linear",
            "llm": None,
            "llm_config": text_model_config(config),
            "tokenizer": source,
            "checkpoint": source,
            "template": getattr(config, TEMPLATE_KEY, None) or "paligemma",
            "image_token": "<image>",
            "image_token_id": int(config.image_token_id),
            "family": self.family,
            "description": f"transformers PaliGemma checkpoint {source} ({text.model_type})",
        }

    def hf_config(self, network: nn.Module) -> PaliGemmaConfig:
        """transformers' ``PaliGemmaConfig`` of our network.

        Raises:
            ValueError: naming what transformers' PaliGemma cannot represent (feature layer, projector).
        """
        vision = self._check_tower(network)
        proj = network.projector
        if not (isinstance(proj, nn.Sequential) and len(proj) == 1 and isinstance(proj[0], nn.Linear)):
            raise ValueError(f"transformers' PaliGemma projector is one Linear (`linear`); got {proj!r}.")
        text = network.llm.config
        vision_dict = {**vision.to_dict(), "projection_dim": int(text.hidden_size)}
        patches = int(network.vision.model.patch_embed.num_patches)
        vision_dict["num_image_tokens"] = patches
        return PaliGemmaConfig(
            vision_config=vision_dict,
            text_config=text.to_dict(),
            image_token_id=int(network.image_token_id),
            projection_dim=int(text.hidden_size),
            hidden_size=int(text.hidden_size),
            tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        )
