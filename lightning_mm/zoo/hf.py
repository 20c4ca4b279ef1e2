"""``hf:<hub id or directory>`` model names: the spec of a transformers VLM checkpoint, derived from its config."""

from __future__ import annotations

from lightning_mm.interop.checkpoint import checkpoint_spec_fields
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["HF_PREFIX", "hf_spec", "is_hf_name"]

HF_PREFIX = "hf:"


def is_hf_name(name: str) -> bool:
    """Whether ``name`` names a transformers checkpoint (``hf:<hub id or directory>``)."""
    return name.startswith(HF_PREFIX)


def hf_spec(name: str) -> ModelSpec:
    """The spec of ``hf:<source>``: tower, projector, LM config, image token and template read from its config.

    Only configs are read (``config.json``, ``preprocessor_config.json``); weights are loaded when the network is
    built with ``pretrained=True``.

    Args:
        name: ``hf:`` followed by a hub id (``hf:llava-hf/llava-1.5-7b-hf``) or a local directory.
    """
    source = name.removeprefix(HF_PREFIX)
    if not source:
        raise ValueError("Model name 'hf:' names no checkpoint: write hf:<hub id or directory>.")
    return ModelSpec(name=name, **checkpoint_spec_fields(source))
