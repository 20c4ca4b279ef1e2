"""The :class:`~lightning_mm.data.DataContract` of a spec: tokenizer, image-token id, the family's image layout, the
tower's image preprocessing, chat template and stop ids, made in one place for the module, ``chat`` and ``export``."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import get_template
from lightning_mm.data.contract import DataContract
from lightning_mm.families.base import ImageSetup
from lightning_mm.families.registry import get_family
from lightning_mm.zoo.spec import ModelSpec, count_image_tokens, load_tokenizer

__all__ = ["data_contract", "image_token_id"]


def image_token_id(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase | None) -> int:
    """The spec's image-token id (written down, else the tokenizer's id of ``spec.image_token``)."""
    if spec.image_token_id is not None:
        return int(spec.image_token_id)
    return int((tokenizer or load_tokenizer(spec)).convert_tokens_to_ids(spec.image_token))


def data_contract(
    spec: ModelSpec, tokenizer: PreTrainedTokenizerBase | None = None, image_aspect: str = "pad"
) -> DataContract:
    """The model-to-data contract of ``spec``.

    Args:
        spec: The model's spec.
        tokenizer: Its tokenizer (None: loaded from the spec).
        image_aspect: How one fixed-size view is fitted to the tower's input (``pad``, ``resize``, ``crop``).
    """
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(spec)
    view_tokens, data_config = count_image_tokens(spec)
    token_id = image_token_id(spec, tokenizer)
    setup = ImageSetup(token_id, dict(data_config), view_tokens, image_aspect)
    family = get_family(spec.family)
    layout = family.image_layout(spec, tokenizer, setup)
    return DataContract(
        tokenizer=tokenizer,
        image_token_id=token_id,
        layout=layout,
        image_data_config=dict(data_config),
        template=get_template(spec.template),
        image_aspect=image_aspect,
        image_token=spec.image_token,
        attention_pattern=family.attention_pattern(spec).kind,
    )
