"""Deprecated import paths: a module that moved keeps its old path for one release, as an alias that warns."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["moved_module"]


def moved_module(old: str, new: ModuleType, public: str | None = None) -> tuple[list[str], Callable[[str], Any]]:
    """``__all__`` and a module ``__getattr__`` for the alias ``old`` of the module ``new``.

    Each name read from the alias comes from ``new`` and raises a ``DeprecationWarning`` naming the new path::

        from lightning_mm.placement import lora

        __all__, __getattr__ = moved_module(__name__, lora, public="lightning_mm.placement")

    Args:
        old: Dotted path of the alias module (its ``__name__``).
        new: The module that holds the code now (its ``__all__`` is the alias's).
        public: The path the warning recommends (default: ``new``'s), e.g. the package that re-exports the names.
    """
    names = list(getattr(new, "__all__", []))
    where = public or new.__name__

    def getattr_(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved: import it from {where}; the old path will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(new, name)

    return names, getattr_
