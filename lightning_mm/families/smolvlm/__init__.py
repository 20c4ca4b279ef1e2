"""The ``smolvlm`` family: SmolVLM-256M / 500M and Idefics3-style models (image splitting with row/column markers, the
``smolvlm`` chat format); transformers' ``Idefics3ForConditionalGeneration`` and ``SmolVLMForConditionalGeneration``
both ways."""

from lightning_mm.families.registry import register_family
from lightning_mm.families.smolvlm import template  # noqa: F401  (registers the ``smolvlm`` chat template)
from lightning_mm.families.smolvlm.family import SmolVLMFamily

SMOLVLM = register_family(SmolVLMFamily())

from lightning_mm.families.smolvlm import zoo  # noqa: E402, F401  (registers the entries, after the family)

__all__ = ["SMOLVLM", "SmolVLMFamily"]
