"""Deprecated: moved to :mod:`lightning_mm.placement.placement` (this alias will be removed in the next release)."""

from lightning_mm.deprecated import moved_module

__all__, __getattr__ = moved_module(__name__, "lightning_mm.placement.placement", public="lightning_mm.placement")
