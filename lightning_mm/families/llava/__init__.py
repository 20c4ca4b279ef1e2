"""The ``llava`` family: LLaVA-1.5 (released and from components), the quickstart's ``tiny`` and the tower miniatures,
the small SigLIP / DINOv2 + Qwen2 pairings; transformers' ``LlavaForConditionalGeneration`` both ways."""

from lightning_mm.families.llava.family import LlavaFamily
from lightning_mm.families.registry import register_family

LLAVA = register_family(LlavaFamily())

from lightning_mm.families.llava import small, tiny, zoo  # noqa: E402, F401  (registers the entries, after the family)

__all__ = ["LLAVA", "LlavaFamily"]
