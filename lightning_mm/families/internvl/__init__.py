"""The ``internvl`` family: InternVL 2.5 / 3 (dynamic tiling, InternViT, pixel shuffle + normed MLP, Qwen2.5);
transformers' ``InternVLForConditionalGeneration`` both ways."""

from lightning_mm.families.internvl import projector  # noqa: F401  (registers the pixel_shuffle*_norm_mlp2x_gelu projectors)
from lightning_mm.families.internvl.family import InternVLFamily
from lightning_mm.families.registry import register_family

INTERNVL = register_family(InternVLFamily())

from lightning_mm.families.internvl import zoo  # noqa: E402, F401  (registers the entries, after the family)

__all__ = ["INTERNVL", "InternVLFamily"]
