"""The family registry: families by name, and the family of a transformers ``model_type``.

The built-in families are imported on the first look-up (their modules register their zoo entries too); a family of
your own registers with :func:`register_family` and is looked up like the built-in ones.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_mm.errors import ConfigError, did_you_mean
from lightning_mm.families.base import Family

__all__ = [
    "family_for_model_type",
    "get_family",
    "known_model_types",
    "list_families",
    "load_builtin_families",
    "register_family",
]

#: Built-in families: name -> the module that registers it (imported on first use).
BUILTIN_FAMILIES = {
    "llava": "lightning_mm.families.llava",
    "llava_next": "lightning_mm.families.llava_next",
    "smolvlm": "lightning_mm.families.smolvlm",
    "internvl": "lightning_mm.families.internvl",
    "paligemma": "lightning_mm.families.paligemma",
    "gemma3": "lightning_mm.families.gemma3",
}

_FAMILIES: dict[str, Family] = {}
_loaded = False


def load_builtin_families() -> None:
    """Import the built-in families once (each registers itself and its zoo entries)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: a family module that looks up another while it imports must not recurse
    for module in BUILTIN_FAMILIES.values():
        importlib.import_module(module)


def register_family(family: Family) -> Family:
    """Add ``family`` to the registry under ``family.name`` (a name may be registered once)."""
    if not family.name:
        raise ValueError(f"{type(family).__name__} has no name.")
    if family.name in _FAMILIES and type(_FAMILIES[family.name]) is not type(family):
        raise ValueError(f"A different family is already registered as {family.name!r}.")
    _FAMILIES[family.name] = family
    return family


def list_families() -> list[str]:
    """Registered family names, sorted."""
    load_builtin_families()
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    """The family registered as ``name``.

    Raises:
        ConfigError: for an unknown name, with the close names.
    """
    load_builtin_families()
    if name not in _FAMILIES:
        raise ConfigError(
            f"Unknown model family {name!r}.{did_you_mean(name, _FAMILIES)} Known: {', '.join(sorted(_FAMILIES))}."
        )
    return _FAMILIES[name]


def family_for_model_type(model_type: str | None) -> tuple[Family, Any] | None:
    """(family, converter) that reads transformers ``model_type``; None when no family does.

    The families registered so far are asked first: a family's zoo module, importing, finds its own converter without
    loading the others.
    """
    for attempt in range(2):
        for family in _FAMILIES.values():
            for converter in family.converters:
                if model_type in converter.model_types:
                    return family, converter
        if attempt == 0:
            load_builtin_families()
    return None


def known_model_types() -> list[str]:
    """transformers ``model_type``s that some registered family reads, sorted."""
    load_builtin_families()
    return sorted({t for family in _FAMILIES.values() for c in family.converters for t in c.model_types})
