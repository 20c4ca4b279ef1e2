"""The ``paligemma`` family: PaliGemma 2 (SigLIP so400m + Linear + Gemma 2, prefix-LM attention); transformers'
``PaliGemmaForConditionalGeneration`` both ways."""

from lightning_mm.families.paligemma import template  # noqa: F401  (registers the ``paligemma`` chat template)
from lightning_mm.families.paligemma.family import PaliGemmaFamily
from lightning_mm.families.registry import register_family

PALIGEMMA = register_family(PaliGemmaFamily())

from lightning_mm.families.paligemma import zoo  # noqa: E402, F401  (registers the entries, after the family)

__all__ = ["PALIGEMMA", "PaliGemmaFamily"]
