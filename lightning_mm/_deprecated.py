"""Deprecated aliases: names and modules that moved stay importable from their old path for one release, with a warning.

Both helpers build a module-level ``__getattr__``: :func:`moved` serves single names and resolves each when it is first
read (so an old module does not import the new one at import time and the package keeps its layering);
:func:`moved_module` turns a whole old module into an alias of the module that holds its code now.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["moved", "moved_module"]


def _warn(old: str, name: str, where: str) -> None:
    warnings.warn(
        f"{old}.{name} moved to {where}; the old path will be removed in the next release.",
        DeprecationWarning,
        stacklevel=3,
    )


def moved(old_module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves each moved name from its new module with a ``DeprecationWarning``.

    Args:
        old_module: The module the names used to live in (``__name__``).
        names: Old name -> ``new.module`` or ``new.module:new_name``.
    """

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, new_name = target.partition(":")
        new_name = new_name or name
        _warn(old_module, name, f"{module}.{new_name}")
        return getattr(importlib.import_module(module), new_name)

    return __getattr__


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
        _warn(old, name, f"{where}.{name}")
        return getattr(new, name)

    return names, getattr_
