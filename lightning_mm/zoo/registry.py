"""Model registry: register, look up and list named :class:`ModelSpec` entries."""

from __future__ import annotations

import fnmatch

from lightning_mm.errors import ConfigError, close_matches
from lightning_mm.families.registry import load_builtin_families
from lightning_mm.zoo.hf import HF_PREFIX, hf_spec, is_hf_name
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["get_spec", "list_models", "register_model"]

_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry under ``spec.name`` (a name may be registered once)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"A different model is already registered as {spec.name!r}.")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; ``hf:<hub id or directory>`` reads a transformers checkpoint's config.

    ``hf:`` with the checkpoint of a zoo entry gives that entry (written down, so it builds offline).

    Raises:
        ConfigError: for an unknown name, with the closest known names.
    """
    load_builtin_families()
    if is_hf_name(name):
        source = name.removeprefix(HF_PREFIX)
        registered = [s for s in _REGISTRY.values() if s.checkpoint == source]
        return registered[0] if registered else hf_spec(name)
    if name not in _REGISTRY:
        close = close_matches(name, _REGISTRY) or sorted(fnmatch.filter(_REGISTRY, f"*{name.split('-')[0]}*"))
        hint = f" Did you mean {' or '.join(repr(c) for c in close[:3])}?" if close else ""
        raise ConfigError(
            f"Unknown model {name!r}.{hint} `lightning-mm zoo` lists the {len(_REGISTRY)} known names"
            + (f" ({', '.join(list_models())})." if len(_REGISTRY) <= 12 else ".")
        )
    return _REGISTRY[name]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted, optionally filtered by a shell-style ``pattern`` (``llava-*``)."""
    load_builtin_families()
    names = sorted(_REGISTRY)
    return fnmatch.filter(names, pattern) if pattern else names
