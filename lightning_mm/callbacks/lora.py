"""Deprecated: moved to :mod:`lightning_mm.placement.lora` (this alias will be removed in the next release)."""

from lightning_mm._deprecated import moved_module
from lightning_mm.placement import lora as _new

__all__, __getattr__ = moved_module(__name__, _new, public="lightning_mm.placement")
