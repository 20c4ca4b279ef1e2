"""Deprecated aliases: names that moved stay importable from their old module for one release, with a warning.

The alias is resolved when it is first read (a module-level ``__getattr__``), so an old module does not import the
new one at import time and the package keeps its layering.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved"]


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
        warnings.warn(
            f"{old_module}.{name} moved to {module}.{new_name}; the old name will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new_name)

    return __getattr__
