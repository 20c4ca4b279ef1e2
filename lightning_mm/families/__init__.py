"""VLM families, one folder each: a :class:`Family` owns its zoo entries, image layout and processor, converters to and
from transformers and chat template.

Built-in: ``llava`` (LLaVA-1.5 and every model that reads one fixed-size view per image), ``llava_next`` (LLaVA-NeXT
and LLaVA-OneVision: any-resolution tiling), ``smolvlm`` (SmolVLM and Idefics3: image splitting with row/column
markers). A family of your own: subclass :class:`Family`, ``register_family(...)`` it, and name it in
``ModelSpec.family`` of the zoo entries you register.
"""

from lightning_mm.families.base import Family, ImageSetup
from lightning_mm.families.registry import (
    BUILTIN_FAMILIES,
    family_for_model_type,
    get_family,
    list_families,
    load_builtin_families,
    register_family,
)

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
