"""``hf:<hub id or directory>`` model names: the spec of a transformers VLM checkpoint, derived from its config."""

from __future__ import annotations

from pathlib import Path

from lightning_mm.interop.checkpoint import checkpoint_spec_fields
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["HF_PREFIX", "absolute_hf_name", "hf_spec", "is_hf_name"]

HF_PREFIX = "hf:"


def is_hf_name(name: str) -> bool:
    """Whether ``name`` names a transformers checkpoint (``hf:<hub id or directory>``)."""
    return name.startswith(HF_PREFIX)


def absolute_hf_name(name: str) -> str:
    """``name`` with the local directory of an ``hf:`` name made absolute (other names unchanged).

    A Lightning checkpoint records the model name, and an adapter-only one rebuilds its base from it: a relative
    directory would then depend on the working directory.
    """
    path = Path(name.removeprefix(HF_PREFIX)).expanduser()
    return HF_PREFIX + str(path.resolve()) if is_hf_name(name) and path.is_dir() else name


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
