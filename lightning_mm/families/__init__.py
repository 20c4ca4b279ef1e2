"""VLM families, one folder each: a :class:`Family` owns its zoo entries, image layout and processor, converters to and
from transformers and chat template.

Built-in: ``llava`` (LLaVA-1.5 and every model that reads one fixed-size view per image), ``llava_next`` (LLaVA-NeXT
and LLaVA-OneVision: any-resolution tiling), ``smolvlm`` (SmolVLM and Idefics3: image splitting with row/column
markers). A family of your own: subclass :class:`Family`, ``register_family(...)`` it, and name it in
``ModelSpec.family`` of the zoo entries you register.

The names are imported on first use (``import lightning_mm.families`` loads neither torch nor transformers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_mm.lazy import lazy_attributes

if TYPE_CHECKING:
    from lightning_mm.families.base import Family, ImageSetup
    from lightning_mm.families.registry import (
        BUILTIN_FAMILIES,
        family_for_model_type,
        get_family,
        list_families,
        load_builtin_families,
        register_family,
    )

_SOURCES = {
    "BUILTIN_FAMILIES": "lightning_mm.families.registry",
    "Family": "lightning_mm.families.base",
    "ImageSetup": "lightning_mm.families.base",
    "family_for_model_type": "lightning_mm.families.registry",
    "get_family": "lightning_mm.families.registry",
    "list_families": "lightning_mm.families.registry",
    "load_builtin_families": "lightning_mm.families.registry",
    "register_family": "lightning_mm.families.registry",
}

__all__ = [
    "BUILTIN_FAMILIES",
    "Family",
    "ImageSetup",
    "family_for_model_type",
    "get_family",
    "list_families",
    "load_builtin_families",
    "register_family",
]

__getattr__, __dir__ = lazy_attributes(__name__, _SOURCES)
