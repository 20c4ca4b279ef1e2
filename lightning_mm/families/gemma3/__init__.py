"""The ``gemma3`` family: Gemma 3 4B and up (SigLIP so400m 896 px + pooled projection + Gemma 3, bidirectional
attention within each image); transformers' ``Gemma3ForConditionalGeneration`` both ways."""

from lightning_mm.families.gemma3.family import Gemma3Family
from lightning_mm.families.registry import register_family

GEMMA3 = register_family(Gemma3Family())

from lightning_mm.families.gemma3 import zoo  # noqa: E402, F401  (registers the entries, after the family)

__all__ = ["GEMMA3", "Gemma3Family"]
