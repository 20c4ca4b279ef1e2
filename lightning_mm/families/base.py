"""The :class:`Family` interface: what the rest of the package asks of one VLM family.

A family answers, for the models it owns: how the projector is built from the tower (:meth:`Family.build_projector`),
how many tokens one view of an image becomes (:meth:`Family.view_tokens`), how an image becomes tiles and prompt ids
(:meth:`Family.image_layout`), how its LM attends (:meth:`Family.attention_pattern`), which transformers formats it reads and writes (:attr:`Family.converters`) and which
one a network is written as (:meth:`Family.hf_model_type`), and transformers' processor of an export
(:meth:`Family.hf_processor`). The defaults are those of a model that reads one fixed-size view per image (LLaVA-1.5).
Nothing outside ``lightning_mm/families`` asks "which family is this?": it asks the family named by
``ModelSpec.family`` (:func:`~lightning_mm.families.get_family`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.contract import DataContract
from lightning_mm.data.images import ImageProcessor
from lightning_mm.data.layout import FixedLayout, ImageLayout
from lightning_mm.models import build_projector
from lightning_mm.models.attention_pattern import CAUSAL, AttentionPattern
from lightning_mm.models.vision import VisionTower

__all__ = ["Family", "ImageSetup"]


@dataclass(frozen=True)
class ImageSetup:
    """What a family's image layout is made from, besides the spec and the tokenizer.

    Attributes:
        image_token_id: Id of the image token.
        image_data_config: timm data config of the tower (input size, mean, std, interpolation).
        view_tokens: Tokens one view (one tile) becomes (:meth:`Family.view_tokens`).
        image_aspect: How one fixed-size view is fitted to the tower's input (``pad``, ``resize``, ``crop``).
    """

    image_token_id: int
    image_data_config: dict[str, Any]
    view_tokens: int
    image_aspect: str = "pad"


class Family:
    """One VLM family (subclass it, set :attr:`name`, override what differs, then ``register_family(MyFamily())``).

    Attributes:
        name: Registry name, the value of ``ModelSpec.family``.
        description: One line for the docs and ``lightning-mm zoo``.
        converters: The transformers formats the family reads (``hf:`` import) and writes (``export --format hf``),
            each a converter with ``model_types``, ``hf_model_class``, ``spec_fields``, ``to_ours``, ``to_hf``,
            ``hf_config``; the first one writes by default.
    """

    name: str = ""
    description: str = ""
    converters: Sequence[Any] = ()

    # ------------------------------------------------------------ the network
    def build_projector(self, spec: Any, tower: VisionTower, text_dim: int) -> nn.Module:
        """The projector of ``spec`` between ``tower``'s features and an LM of width ``text_dim``."""
        return build_projector(spec.projector, tower.hidden_size, text_dim)

    def attention_pattern(self, spec: Any) -> AttentionPattern:
        """The LM's attention pattern (:mod:`lightning_mm.models.attention_pattern`): causal by default; Gemma 3's
        image tokens see their whole image, PaliGemma's prefix sees itself whole."""
        return CAUSAL

    def view_tokens(self, projector: nn.Module, features: torch.Tensor) -> int:
        """Tokens one view (one tile) becomes, from the (1, N, D_v) tower features of one view."""
        return int(projector(features).shape[1])

    # ------------------------------------------------------------ the data
    def image_layout(self, spec: Any, tokenizer: PreTrainedTokenizerBase, images: ImageSetup) -> ImageLayout:
        """How an image becomes tiles and prompt ids: here one view resized to the tower's input with the model's
        aspect mode and ``images.view_tokens`` image tokens (:class:`~lightning_mm.data.FixedLayout`)."""
        processor = ImageProcessor(images.image_data_config, images.image_aspect)
        return FixedLayout(images.view_tokens, images.image_token_id, processor)

    def image_tokens_label(self, spec: Any, view_tokens: int) -> str:
        """The image-token column of ``lightning-mm zoo`` (``"576"``, ``"576/tile"``, ``"64/view"``)."""
        return str(view_tokens)

    # ------------------------------------------------------------ transformers
    def hf_model_type(self, network: nn.Module) -> str:
        """The transformers ``model_type`` ``network`` is written as by ``export --format hf``."""
        if not self.converters:
            raise ValueError(f"Family {self.name!r} has no transformers format to export to.")
        return self.converters[0].model_types[0]

    def converter(self, model_type: str) -> Any:
        """The converter of transformers ``model_type``."""
        for converter in self.converters:
            if model_type in converter.model_types:
                return converter
        known = [t for c in self.converters for t in c.model_types]
        raise ValueError(f"Family {self.name!r} has no transformers {model_type!r} format; it has {known}.")

    def hf_processor(self, contract: DataContract, network: nn.Module, hf_config: Any) -> Any:
        """transformers' processor of an export (tokenizer, image processor, chat template) that prepares inputs as
        training did.

        Raises:
            ValueError: when the family has none.
        """
        raise ValueError(f"Family {self.name!r} has no transformers processor to export.")
