"""transformers' ``InternVLForConditionalGeneration`` (``model_type`` ``internvl``) <-> our network.

Our :class:`~lightning_mm.models.VisionLanguageModel` computes what transformers' InternVL computes: every tile goes
through timm's InternViT (:mod:`~lightning_mm.families.internvl.tower`), the CLS token is dropped
(``vision_feature_select_strategy="default"``), the block ``vision_feature_layer`` is read (transformers counts the
patch embeddings as hidden state 0: a positive layer k is our block k - 1, negative layers agree), the tile's patch
grid is pixel-shuffled and projected (:class:`~lightning_mm.families.internvl.projector.PixelShuffleNormMLP`), and the
features of all tiles, in order, fill the image-token positions of a causal Qwen2 / Llama decoder.

Weight layouts: transformers 5 modules are ``model.vision_tower.*``, ``model.multi_modal_projector.*``,
``model.language_model.*`` and ``lm_head.*``; ``save_pretrained`` writes ``vision_tower.*``,
``multi_modal_projector.*``, ``language_model.model.*`` and ``language_model.lm_head.*``. Both are read.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import InternVLConfig, InternVLForConditionalGeneration, PretrainedConfig

from lightning_mm.families.internvl.layout import TilingSettings
from lightning_mm.families.internvl.projector import PixelShuffleNormMLP, projector_name, scale_of_ratio
from lightning_mm.families.internvl.tower import TIMM_BASE, VISION_RULES, internvit_config, timm_kwargs
from lightning_mm.interop.converter import Converter
from lightning_mm.interop.hf_config import TEMPLATE_KEY, image_overlay, text_model_config
from lightning_mm.interop.keys import KeyRule, convert_network_state, rename_prefixes

__all__ = ["InternVLConverter"]

VISION, PROJECTOR, LANGUAGE = "model.vision_tower.", "model.multi_modal_projector.", "model.language_model."
SAVED_LAYOUTS = (
    ("language_model.model.", LANGUAGE),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower.", VISION),
    ("multi_modal_projector.", PROJECTOR),
)
PROJECTOR_RULES = tuple(
    KeyRule.rename(f"projector.{n}.{{p}}", f"{PROJECTOR}{n}.{{p}}") for n in ("layer_norm", "linear_1", "linear_2")
)
IMAGE_TOKEN = "<IMG_CONTEXT>"
TEMPLATE = "chatml"  # the -hf checkpoints' chat template: <|im_start|>{role}\n{content}<|im_end|>\n


def _feature_layer(config: PretrainedConfig, source: str) -> int:
    """Our block index of ``vision_feature_layer``."""
    layer = config.vision_feature_layer
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ValueError(f"{source}: vision_feature_layer={layer!r}; only one feature layer (an int) is supported.")
    depth = int(config.vision_config.num_hidden_layers)
    if layer == 0 or layer == -depth - 1:
        raise ValueError(f"{source}: vision_feature_layer={layer} reads the patch embeddings, not a block.")
    if not -depth - 1 < layer <= depth:
        raise ValueError(f"{source}: vision_feature_layer={layer} is out of range for {depth} vision layers.")
    return layer - 1 if layer > 0 else layer


def _tiling(preprocessor: dict | None, tile: int, source: str) -> dict[str, Any]:
    """``image_tiling`` of an image processor's settings (GotOcr2: ``min_patches``, ``max_patches``, ``size``)."""
    preprocessor = preprocessor or {}
    size = preprocessor.get("size") or {}
    if size and (size.get("height"), size.get("width")) != (tile, tile):
        raise ValueError(f"{source}: the image processor's size {size} is not the tower's {tile}x{tile} tile.")
    defaults = TilingSettings()
    return {
        "min_tiles": int(preprocessor.get("min_patches", defaults.min_tiles)),
        "max_tiles": int(preprocessor.get("max_patches", defaults.max_tiles)),
    }


class InternVLConverter(Converter):
    """Converter of transformers' InternVL (``model_type`` ``internvl``)."""

    name = "internvl"
    family = "internvl"
    model_types = ("internvl",)
    architectures = ("InternVLForConditionalGeneration",)
    hf_model_class = InternVLForConditionalGeneration

    # ------------------------------------------------------------ config -> spec
    def spec_fields(self, config: PretrainedConfig, source: str, preprocessor: dict | None) -> dict[str, Any]:
        """:class:`~lightning_mm.zoo.ModelSpec` fields of the checkpoint ``source`` with config ``config``.

        Raises:
            ValueError: naming the config key our network cannot compute like transformers' InternVL
                (``downsample_ratio``, ``vision_feature_layer``, ``vision_feature_select_strategy``, ...).
        """
        vision = config.vision_config
        if vision.model_type != "internvl_vision":
            raise ValueError(
                f"{source}: vision_config.model_type={vision.model_type!r}; InternVL uses 'internvl_vision'."
            )
        kwargs = timm_kwargs(vision, source)
        overlay = image_overlay(preprocessor)
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        scale = scale_of_ratio(config.downsample_ratio)
        if scale is None:
            raise ValueError(f"{source}: downsample_ratio={config.downsample_ratio}; supported: 0.5.")
        side = kwargs["img_size"] // kwargs["patch_size"]
        if side % scale:
            raise ValueError(
                f"{source}: downsample_ratio={config.downsample_ratio} does not divide the {side}x{side} grid."
            )
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                f"{source}: vision_feature_select_strategy={config.vision_feature_select_strategy!r}; only 'default' "
                "(CLS dropped: the patch grid is square) is supported."
            )
        if config.projector_hidden_act != "gelu":
            raise ValueError(
                f"{source}: projector_hidden_act={config.projector_hidden_act!r}; only 'gelu' is supported."
            )
        per_tile = side * side // scale**2
        if int(config.image_seq_length) != per_tile:
            raise ValueError(
                f"{source}: image_seq_length={config.image_seq_length}, but a {kwargs['img_size']} px tile gives "
                f"{per_tile} tokens ({side}^2 patches / {scale}^2)."
            )
        text = config.text_config
        return {
            "vision_model": TIMM_BASE,
            "vision_kwargs": kwargs,
            "feature_layer": _feature_layer(config, source),
            "drop_prefix_tokens": True,
            "projector": projector_name(scale),
            "llm": None,
            "llm_config": text_model_config(config),
            "tokenizer": source,
            "checkpoint": source,
            "template": getattr(config, TEMPLATE_KEY, None) or TEMPLATE,
            "image_token": IMAGE_TOKEN,
            "image_token_id": int(config.image_token_id),
            "image_tiling": _tiling(preprocessor, kwargs["img_size"], source),
            "family": self.family,
            "description": f"transformers InternVL checkpoint {source} (InternViT + {text.model_type})",
        }

    # ------------------------------------------------------------ weights
    def normalize(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with the saved layout's names turned into transformers 5's module names."""
        names = rename_prefixes(state, SAVED_LAYOUTS)
        return {names[k]: v for k, v in state.items()}

    def _convert(
        self, state: dict[str, torch.Tensor], network: nn.Module, to: str
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        llm = ((f"llm.{network.llm.base_model_prefix}.", LANGUAGE), ("llm.lm_head.", "lm_head."))
        return convert_network_state(state, to, ("vision.model.", VISION), VISION_RULES, PROJECTOR_RULES, llm)

    # ------------------------------------------------------------ network -> transformers config
    def hf_config(self, network: nn.Module) -> InternVLConfig:
        """transformers' ``InternVLConfig`` of our network.

        Raises:
            ValueError: naming what transformers' InternVL cannot represent (tower, prefix tokens, projector).
        """
        tower, projector = network.vision, network.projector
        if not isinstance(projector, PixelShuffleNormMLP) or projector.act.approximate != "none":
            raise ValueError(
                "transformers' InternVL projector is pixel shuffle + LayerNorm -> Linear -> GELU -> Linear "
                f"({projector_name(2)}); got {type(projector).__name__}."
            )
        if not tower.drop_prefix_tokens or tower.feature_norm:
            raise ValueError("transformers' InternVL drops the CLS token and reads a block without a final norm.")
        vision = internvit_config(tower.model)
        side = vision.image_size[0] // vision.patch_size[0]
        layer = tower.block_index - tower.depth  # negative: the same block in both counts
        text = network.llm.config
        return InternVLConfig(
            vision_config=vision.to_dict(),
            text_config=text.to_dict(),
            image_token_id=int(network.image_token_id),
            image_seq_length=side * side // projector.scale_factor**2,
            downsample_ratio=1.0 / projector.scale_factor,
            projector_hidden_act="gelu",
            vision_feature_layer=layer,
            vision_feature_select_strategy="default",
            tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        )
