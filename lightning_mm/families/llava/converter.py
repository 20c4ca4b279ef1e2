"""transformers' ``LlavaForConditionalGeneration`` <-> our network: spec from its config, weight names both ways.

Our :class:`~lightning_mm.models.VisionLanguageModel` computes what transformers' LLaVA computes when the tower is a
CLIP or SigLIP ViT, the projector is its 2-layer GELU MLP and at most one prefix token (CLS) is dropped. Facts the
mapping rests on: transformers counts the patch embeddings as hidden state 0, so a positive ``vision_feature_layer`` k
is our block k-1 (negative indices agree); ``vision_feature_select_strategy="default"`` drops exactly the first token,
``"full"`` none.

Weight layouts: transformers 5 names the modules ``model.language_model.*``, ``model.vision_tower.*``,
``model.multi_modal_projector.*``, ``lm_head.*``; checkpoints written by transformers 4 (and by 5's
``save_pretrained``) store ``language_model.model.*``, ``language_model.lm_head.*``, ``vision_tower[.vision_model].*``
and ``multi_modal_projector.*``. Every layout is read; names are normalised to the module names first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlavaConfig, LlavaForConditionalGeneration, PretrainedConfig

from lightning_mm.interop.converter import Converter
from lightning_mm.interop.hf_config import TEMPLATE_KEY, image_overlay, text_model_config
from lightning_mm.interop.keys import KeyRule, convert_network_state, rename_prefixes
from lightning_mm.interop.towers import tower_for_hf, tower_for_timm

__all__ = ["LlavaConverter", "check_llava_projector"]

# names in saved checkpoints (transformers 4, and 5's save_pretrained) -> transformers 5 module names
SAVED_LAYOUTS = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("model.vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)
VISION, PROJECTOR, LANGUAGE = "model.vision_tower.", "model.multi_modal_projector.", "model.language_model."
PROJECTOR_RULES = (
    KeyRule.rename("projector.0.{p}", PROJECTOR + "linear_1.{p}"),
    KeyRule.rename("projector.2.{p}", PROJECTOR + "linear_2.{p}"),
)
# chat format of the data per LM family (what the released LLaVA checkpoints were trained with)
TEMPLATES = {"llama": "vicuna_v1", "qwen2": "chatml"}


def check_llava_projector(projector: nn.Module) -> None:
    """Raise ``ValueError`` unless ``projector`` is transformers' LLaVA projector: Linear -> exact GELU -> Linear."""
    ok = (
        isinstance(projector, nn.Sequential)
        and len(projector) == 3
        and isinstance(projector[0], nn.Linear)
        and isinstance(projector[1], nn.GELU)
        and projector[1].approximate == "none"
        and isinstance(projector[2], nn.Linear)
        and projector[0].bias is not None
        and projector[2].bias is not None
    )
    if not ok:
        raise ValueError(
            f"Projector {projector!r} cannot be written as transformers' LLaVA projector, which is one layout only: "
            "Linear -> GELU -> Linear with biases (our `mlp2x_gelu`)."
        )


class LlavaConverter(Converter):
    """Converter of transformers' LLaVA (``model_type`` ``llava``)."""

    name = "llava"
    family = "llava"
    model_types = ("llava",)
    architectures = ("LlavaForConditionalGeneration",)
    hf_model_class = LlavaForConditionalGeneration

    # ------------------------------------------------------------ config -> spec
    def spec_fields(self, config: PretrainedConfig, source: str, preprocessor: dict | None) -> dict[str, Any]:
        """:class:`~lightning_mm.zoo.ModelSpec` fields of the checkpoint ``source`` with config ``config``.

        Raises:
            ValueError: for what our network cannot compute like transformers' LLaVA (several feature layers, a
                select strategy that drops a patch token, another projector).
        """
        vision = config.vision_config
        family = tower_for_hf(vision.model_type)
        kwargs = family.timm_kwargs(vision)
        overlay = image_overlay(preprocessor)
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"{source}: vision_feature_layer={layer!r}; only one feature layer is supported.")
        depth = int(vision.num_hidden_layers)
        if layer == 0 or layer == -depth - 1:
            raise ValueError(f"{source}: vision_feature_layer={layer} reads the patch embeddings, not a block.")
        if not -depth - 1 < layer <= depth:
            raise ValueError(f"{source}: vision_feature_layer={layer} is out of range for {depth} vision layers.")
        strategy = config.vision_feature_select_strategy
        if strategy == "default" and family.num_prefix_tokens != 1:
            raise ValueError(
                f"{source}: vision_feature_select_strategy='default' drops the first token, which a {family.name} "
                "tower spends on a patch (it has no CLS token); only 'full' is supported for it."
            )
        if strategy not in ("default", "full"):
            raise ValueError(f"{source}: unknown vision_feature_select_strategy {strategy!r}.")
        bias = getattr(config, "multimodal_projector_bias", True)
        if config.projector_hidden_act != "gelu" or not bias:
            raise ValueError(
                f"{source}: projector_hidden_act={config.projector_hidden_act!r}, multimodal_projector_bias={bias}; "
                "only projector_hidden_act='gelu' with biases is supported."
            )
        text, llm_config = config.text_config, text_model_config(config)
        return {
            "vision_model": family.timm_base,
            "vision_kwargs": kwargs,
            "feature_layer": layer - 1 if layer > 0 else layer,
            "drop_prefix_tokens": strategy == "default",
            "projector": "mlp2x_gelu",
            "llm": None,
            "llm_config": llm_config,
            "tokenizer": source,
            "checkpoint": source,
            # a folder written by export_hf names the template it was trained with; else the family's usual one
            "template": getattr(config, TEMPLATE_KEY, None) or TEMPLATES.get(text.model_type, "tokenizer"),
            "image_token_id": int(config.image_token_index),
            "family": self.family,
            "description": f"transformers LLaVA checkpoint {source} ({family.name} + {text.model_type})",
        }

    # ------------------------------------------------------------ weights
    def normalize(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with every saved layout's names turned into transformers 5's module names."""
        names = rename_prefixes(state, SAVED_LAYOUTS)
        return {names[k]: v for k, v in state.items()}

    @staticmethod
    def _llm_prefix(network: nn.Module) -> str:
        return f"llm.{network.llm.base_model_prefix}."

    def _convert(
        self, state: dict[str, torch.Tensor], network: nn.Module, to: str
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The tower through its family's rules, the projector through ``PROJECTOR_RULES``, the LM renamed whole."""
        tower = tower_for_timm(network.vision.model, network.vision.model_name)
        llm = ((self._llm_prefix(network), LANGUAGE), ("llm.lm_head.", "lm_head."))
        return convert_network_state(state, to, ("vision.model.", VISION), tower.rules, PROJECTOR_RULES, llm)

    # ------------------------------------------------------------ network -> transformers config
    def hf_config(self, network: nn.Module) -> LlavaConfig:
        """transformers' ``LlavaConfig`` of our network.

        Raises:
            ValueError: naming what transformers' LLaVA cannot represent (tower, prefix tokens, projector).
        """
        tower = network.vision
        family = tower_for_timm(tower.model, tower.model_name)
        check_llava_projector(network.projector)
        if tower.drop_prefix_tokens and tower.num_prefix_tokens > 1:
            raise ValueError(
                f"Vision tower {tower.model_name!r} drops {tower.num_prefix_tokens} prefix tokens; transformers' LLaVA "
                "drops one ('default') or none ('full')."
            )
        strategy = "default" if tower.drop_prefix_tokens and tower.num_prefix_tokens == 1 else "full"
        kept_prefix = 0 if strategy == "default" else tower.num_prefix_tokens
        text = network.llm.config
        return LlavaConfig(
            vision_config=family.hf_config(tower.model).to_dict(),
            text_config=text.to_dict(),
            image_token_index=int(network.image_token_id),
            image_seq_length=int(tower.model.patch_embed.num_patches) + kept_prefix,
            vision_feature_layer=tower.feature_layer + 1 if tower.feature_layer >= 0 else tower.feature_layer,
            vision_feature_select_strategy=strategy,
            projector_hidden_act="gelu",
            multimodal_projector_bias=True,
            tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        )
