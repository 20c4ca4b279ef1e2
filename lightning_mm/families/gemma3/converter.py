"""transformers' ``Gemma3ForConditionalGeneration`` <-> our network: spec from its config, weight names both ways.

Gemma 3 (4B and up) is a SigLIP so400m read at its last block through ``post_layernorm`` (no pooling head),
:class:`~lightning_mm.families.gemma3.projector.Gemma3Projector` (average pooling to ``mm_tokens_per_image`` tokens,
RMSNorm, one matrix) and a Gemma 3 decoder whose image tokens attend to their whole image: the ``image_blocks``
attention pattern (:mod:`lightning_mm.models.attention_pattern`). Weight names as PaliGemma's
(:mod:`lightning_mm.families.paligemma.converter`), with the projector's ``mm_input_projection_weight`` and
``mm_soft_emb_norm.weight``.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, PretrainedConfig

from lightning_mm.families.gemma3.projector import Gemma3Projector
from lightning_mm.families.paligemma.converter import PROJECTOR, HeadlessSiglipConverter
from lightning_mm.interop.hf_config import TEMPLATE_KEY, text_model_config
from lightning_mm.interop.keys import KeyRule

__all__ = ["Gemma3Converter", "check_pan_and_scan"]

TEMPLATE = "tokenizer"  # the released tokenizer's own chat template (<start_of_turn>user ... model)


def check_pan_and_scan(preprocessor: dict | None, source: str) -> None:
    """Raise ``ValueError`` naming ``do_pan_and_scan`` when the image processor crops images into pan-and-scan views
    (not supported: every image is one 896 px view here)."""
    if preprocessor and preprocessor.get("do_pan_and_scan"):
        raise ValueError(
            f"{source}: the image processor sets do_pan_and_scan=True; pan-and-scan is not supported (one resized "
            "view per image). Set it to false."
        )


class Gemma3Converter(HeadlessSiglipConverter):
    """Converter of transformers' Gemma 3 (``model_type`` ``gemma3``)."""

    name = "gemma3"
    family = "gemma3"
    model_types = ("gemma3",)
    architectures = ("Gemma3ForConditionalGeneration",)
    hf_model_class = Gemma3ForConditionalGeneration
    projector_rules = (
        KeyRule.rename("projector.mm_input_projection_weight", PROJECTOR + "mm_input_projection_weight"),
        KeyRule.rename("projector.mm_soft_emb_norm.weight", PROJECTOR + "mm_soft_emb_norm.weight"),
    )

    def spec_fields(self, config: PretrainedConfig, source: str, preprocessor: dict | None) -> dict[str, Any]:
        """:class:`~lightning_mm.zoo.ModelSpec` fields of the checkpoint ``source`` with config ``config``.

        Raises:
            ValueError: naming the config key our network cannot compute like transformers (pan-and-scan on, a
                pooling head, a token count that does not divide the patch grid).
        """
        check_pan_and_scan(preprocessor, source)
        vision = config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        tokens = int(config.mm_tokens_per_image)
        per_side = int(round(tokens**0.5))
        if per_side * per_side != tokens or side % per_side:
            raise ValueError(
                f"{source}: mm_tokens_per_image={tokens} is not a square that divides the {side}x{side} patch grid."
            )
        text = config.text_config
        return {
            **self._tower_fields(config, source, preprocessor),
            "projector": f"gemma3_pool{tokens}",
            "llm": None,
            "llm_config": text_model_config(config),
            "tokenizer": source,
            "checkpoint": source,
            "template": getattr(config, TEMPLATE_KEY, None) or TEMPLATE,
            "image_token": "<image_soft_token>",
            "image_token_id": int(config.image_token_id),
            "family": self.family,
            "description": f"transformers Gemma 3 checkpoint {source} ({text.model_type})",
        }

    def hf_config(self, network: nn.Module) -> Gemma3Config:
        """transformers' ``Gemma3Config`` of our network.

        Raises:
            ValueError: naming what transformers' Gemma 3 cannot represent (feature layer, projector).
        """
        vision = self._check_tower(network)
        proj = network.projector
        if not isinstance(proj, Gemma3Projector):
            raise ValueError(f"transformers' Gemma 3 projector is Gemma3Projector; got {type(proj).__name__}.")
        text = network.llm.config
        return Gemma3Config(
            vision_config=vision.to_dict(),
            text_config=text.to_dict(),
            image_token_id=int(network.image_token_id),
            mm_tokens_per_image=proj.tokens_per_side**2,
            tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        )
