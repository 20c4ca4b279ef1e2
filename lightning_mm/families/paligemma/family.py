"""The PaliGemma family: SigLIP (no pooling head) + one Linear + Gemma (2), with prefix-LM attention."""

from __future__ import annotations

from typing import Any

from lightning_mm.families.base import Family
from lightning_mm.families.paligemma.converter import PaliGemmaConverter
from lightning_mm.models.attention_pattern import AttentionPattern

__all__ = ["PaliGemmaFamily"]


class PaliGemmaFamily(Family):
    """PaliGemma and PaliGemma 2 (transformers ``model_type`` ``paligemma``): one fixed-size view per image, the
    prefix (image tokens, BOS, prompt, newline) attended to whole, the answer causally."""

    name = "paligemma"
    description = "PaliGemma (2): SigLIP + Linear + Gemma (2), prefix-LM attention over image + prompt"
    converters = (PaliGemmaConverter(),)

    def attention_pattern(self, spec: Any) -> AttentionPattern:
        """Prefix LM: full attention over each sample's prefix, causal over its answer."""
        return AttentionPattern("prefix_lm")
