"""Registry of per-family converters (transformers VLM class <-> our network), looked up from a checkpoint's config.

A converter answers, for one transformers model family: the spec fields of a checkpoint (``spec_fields``), weight
names both ways (``to_ours`` / ``to_hf``), the names a checkpoint may leave out (``tied_keys``), transformers' config of
one of our networks (``hf_config``) and the transformers class to build (``hf_model_class``). LLaVA is registered here;
further families (LLaVA-NeXT, OneVision, SmolVLM) register the same way.
"""

from __future__ import annotations

from typing import Any

from lightning_mm.interop.llava import LlavaConverter
from lightning_mm.interop.llava_next import LlavaNextConverter, LlavaOnevisionConverter
from lightning_mm.interop.smolvlm import SmolVLMConverter
from lightning_mm.models.anyres_projector import AnyResProjector

__all__ = [
    "converter_for_config",
    "converter_for_network",
    "family_of",
    "list_converters",
    "register_converter",
]

_CONVERTERS: dict[str, Any] = {}

# released architectures that look like LLaVA but need another route
_KNOWN_OTHERS = {
    "LlavaLlamaForCausalLM": "the original LLaVA code's checkpoint (its vision tower is not inside it): convert it "
    "with transformers' `convert_llava_weights_to_hf.py`, or start from `llava-1.5-7b-components` with "
    "`projector_weights`",
    "LlavaMistralForCausalLM": "the original LLaVA code's checkpoint: convert it with transformers' scripts first",
}


def register_converter(converter: Any) -> Any:
    """Register ``converter`` under each transformers ``model_type`` it reads."""
    for model_type in converter.model_types:
        _CONVERTERS[model_type] = converter
    return converter


def list_converters() -> list[str]:
    """transformers ``model_type``s with a converter."""
    return sorted(_CONVERTERS)


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
    if model_type not in _CONVERTERS:
        what = f"model_type {model_type!r}" + (f" ({', '.join(architectures)})" if architectures else "")
        raise ValueError(
            f"{source} is not a LLaVA checkpoint: its config.json has {what}; lightning_mm imports "
            f"{', '.join(list_converters())} checkpoints (transformers' LlavaForConditionalGeneration)."
        )
    return _CONVERTERS[model_type]


def family_of(network: Any) -> str:
    """The transformers family a network is written as: ``llava_onevision`` for tiling with a token cap,
    ``llava_next`` for tiling without, ``llava`` otherwise."""
    projector = getattr(network, "projector", None)
    if isinstance(projector, AnyResProjector):
        return "llava_next" if projector.geometry.max_tiles is None else "llava_onevision"
    return "llava"


def converter_for_network(family: str = "llava") -> Any:
    """The converter that writes our networks in transformers' ``family`` format."""
    if family not in _CONVERTERS:
        raise ValueError(f"No converter for {family!r}; known: {', '.join(list_converters())}.")
    return _CONVERTERS[family]


register_converter(LlavaConverter())
register_converter(LlavaNextConverter())
register_converter(LlavaOnevisionConverter())
register_converter(SmolVLMConverter("smolvlm"))
register_converter(SmolVLMConverter("idefics3"))
