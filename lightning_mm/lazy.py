"""Names of a package imported on first use (PEP 562), so that ``import lightning_mm`` and ``lightning-mm --help`` do
not pay for torch, transformers, timm and Lightning until something needs them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` that import each name from its module on first access.

    Args:
        package: ``__name__`` of the module that uses them (for the error of an unknown name).
        names: Public name -> the module that defines it (``{"MultimodalModule": "lightning_mm.module"}``).

    Returns:
        ``(__getattr__, __dir__)``; assign both at module level. A resolved name is stored in the module, so the next
        access is a plain attribute look-up.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *names})

    return __getattr__, __dir__
