"""The converter of a transformers checkpoint, found through the family that reads its ``model_type``.

A converter answers, for one transformers model family: the spec fields of a checkpoint (``spec_fields``), weight
names both ways (``to_ours`` / ``to_hf``), the names a checkpoint may leave out (``tied_keys``), transformers' config of
one of our networks (``hf_config``) and the transformers class to build (``hf_model_class``). Converters belong to
their family (:attr:`lightning_mm.families.Family.converters`).
"""

from __future__ import annotations

from typing import Any

from lightning_mm.families.registry import family_for_model_type, known_model_types

__all__ = ["converter_for_config"]

# released architectures that look like LLaVA but need another route
_KNOWN_OTHERS = {
    "LlavaLlamaForCausalLM": "the original LLaVA code's checkpoint (its vision tower is not inside it): convert it "
    "with transformers' `convert_llava_weights_to_hf.py`, or start from `llava-1.5-7b-components` with "
    "`projector_weights`",
    "LlavaMistralForCausalLM": "the original LLaVA code's checkpoint: convert it with transformers' scripts first",
}


def converter_for_config(config: dict[str, Any], source: str) -> Any:
    """The converter of the checkpoint whose ``config.json`` is ``config``.

    Raises:
        ValueError: for a checkpoint that is not a supported vision-language model (naming what it is).
    """
    architectures = config.get("architectures") or []
    for arch in architectures:
        if arch in _KNOWN_OTHERS:
            raise ValueError(f"{source} is {arch}, {_KNOWN_OTHERS[arch]}.")
    model_type = config.get("model_type")
    found = family_for_model_type(model_type)
    if found is None:
        what = f"model_type {model_type!r}" + (f" ({', '.join(architectures)})" if architectures else "")
        raise ValueError(
            f"{source} is not a supported vision-language checkpoint: its config.json has {what}; lightning_mm imports "
            f"{', '.join(known_model_types())} checkpoints."
        )
    return found[1]
