"""The ``llava_next`` family: LLaVA-NeXT and LLaVA-OneVision (any-resolution tiling); transformers'
``LlavaNextForConditionalGeneration`` and ``LlavaOnevisionForConditionalGeneration`` both ways."""

from lightning_mm.families.llava_next.family import LlavaNextFamily
from lightning_mm.families.registry import register_family

LLAVA_NEXT = register_family(LlavaNextFamily())

from lightning_mm.families.llava_next import zoo  # noqa: E402, F401  (registers the entries, after the family)

__all__ = ["LLAVA_NEXT", "LlavaNextFamily"]
