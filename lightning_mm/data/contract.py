"""What the data side needs from a model, as one object: :class:`DataContract`.

The tokenizer, the image-token id, how an image becomes tiles and prompt ids (the layout), the tower's image
preprocessing, the chat template and the ids that end an answer all belong to the model. The model produces the contract
(:attr:`lightning_mm.MultimodalModule.data_contract`); the datamodules, ``predict``, ``chat`` and ``export`` consume it,
so every one of them reads images and renders prompts as training did. What can be written down (``image_aspect`` and
the template's name) is saved with the checkpoint's hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import ChatTemplate
from lightning_mm.data.images import ASPECT_MODES
from lightning_mm.data.layout import FixedLayout, ImageLayout

__all__ = ["DataContract", "stop_token_ids"]


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, template: ChatTemplate) -> list[int]:
    """Ids that end an answer: the tokenizer's EOS and the template's end-of-turn token (each once, EOS first)."""
    ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(template.end_of_turn(tokenizer))]
    return list(dict.fromkeys(i for i in ids if i is not None))


@dataclass
class DataContract:
    """The model-to-data contract: everything a dataset, a collator, ``chat`` or ``export`` needs from the model.

    Attributes:
        tokenizer: The LM's tokenizer, with the image token.
        image_token_id: Id of the image token.
        image_token: Text of the image token.
        layout: How an image becomes tiles and prompt ids; a :class:`~lightning_mm.data.FixedLayout` for models that
            read one fixed-size view per image (never None).
        image_data_config: timm data config of the vision tower (input size, mean, std, interpolation).
        image_aspect: How a fixed-size view is fitted to the tower's input: ``pad``, ``resize`` or ``crop``
            (layouts that cut images themselves, such as tiling, do not read it).
        template: The chat template the model is trained with.
        stop_token_ids: Ids that end an answer (EOS and the template's end-of-turn token).
        attention_pattern: The LM's attention pattern (``causal``, ``image_blocks``, ``prefix_lm``); a prefix LM's
            batches carry ``prefix_mask`` (:class:`~lightning_mm.data.VLMCollator` ``prefix_lm``).
    """

    tokenizer: PreTrainedTokenizerBase
    image_token_id: int
    layout: ImageLayout
    image_data_config: dict[str, Any]
    template: ChatTemplate
    image_aspect: str = "pad"
    image_token: str = "<image>"
    stop_token_ids: list[int] = field(default_factory=list)
    attention_pattern: str = "causal"

    def __post_init__(self) -> None:
        if self.image_aspect not in ASPECT_MODES:
            raise ValueError(f"image_aspect must be one of {', '.join(ASPECT_MODES)}; got {self.image_aspect!r}.")
        if self.layout is None:
            raise ValueError("A DataContract needs an image layout (FixedLayout for one fixed-size view per image).")
        self.image_token_id = int(self.image_token_id)
        if not self.stop_token_ids:
            self.stop_token_ids = stop_token_ids(self.tokenizer, self.template)

    @property
    def num_image_tokens(self) -> int | None:
        """Tokens of every image under a :class:`~lightning_mm.data.FixedLayout`; None when the count depends on the
        image's size."""
        return self.layout.num_image_tokens if isinstance(self.layout, FixedLayout) else None
