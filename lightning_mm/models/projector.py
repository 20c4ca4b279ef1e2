"""Projectors: map vision features (D_v) into the language model's embedding space (D_t)."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

__all__ = ["build_projector", "list_projectors", "register_projector"]

_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {}


def register_projector(name: str) -> Callable:
    """Decorator registering a projector builder ``fn(vision_dim, text_dim) -> nn.Module`` under ``name``."""

    def wrap(fn: Callable[[int, int], nn.Module]) -> Callable[[int, int], nn.Module]:
        _BUILDERS[name] = fn
        return fn

    return wrap


@register_projector("linear")
def _linear(vision_dim: int, text_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(vision_dim, text_dim))  # indexed as LLaVA's mm_projector.0


def _mlp_gelu(vision_dim: int, text_dim: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(vision_dim, text_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(text_dim, text_dim)]
    return nn.Sequential(*layers)  # LLaVA's layout: mm_projector.0, .2, ...


def list_projectors() -> list[str]:
    """Names accepted by :func:`build_projector` (``mlp{N}x_gelu`` works for any N >= 1)."""
    return sorted([*_BUILDERS, "mlp2x_gelu"])


def build_projector(name: str, vision_dim: int, text_dim: int) -> nn.Module:
    """Build a projector by name.

    Args:
        name: ``linear``, ``mlp{N}x_gelu`` (LLaVA-1.5 uses ``mlp2x_gelu``), or a name added with
            :func:`register_projector`.
        vision_dim: Width of the vision tower's features.
        text_dim: Width of the language model's input embeddings.

    Returns:
        A module mapping (..., vision_dim) to (..., text_dim).
    """
    if name in _BUILDERS:
        return _BUILDERS[name](vision_dim, text_dim)
    match = re.fullmatch(r"mlp(\d+)x_gelu", name)
    if match and int(match.group(1)) >= 1:
        return _mlp_gelu(vision_dim, text_dim, int(match.group(1)))
    raise ValueError(f"Unknown projector {name!r}. Known: {', '.join(list_projectors())} (or mlp<N>x_gelu).")
