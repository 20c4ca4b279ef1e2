"""Parameter counts of a zoo entry (``create_model``, which builds a module, is :mod:`lightning_mm.factory`)."""

from __future__ import annotations

import torch

from lightning_mm.zoo.registry import get_spec
from lightning_mm.zoo.spec import ModelSpec, build_network

__all__ = ["parameter_counts"]


def parameter_counts(spec: ModelSpec | str) -> dict[str, int]:
    """Parameters of each component of a zoo entry, counted on the meta device (offline for complete specs).

    Returns:
        ``{"vision": ..., "projector": ..., "llm": ..., "total": ...}``.
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    with torch.device("meta"):
        network = build_network(spec, pretrained=False)
    counts = {
        part: sum(p.numel() for p in getattr(network, part).parameters()) for part in ("vision", "projector", "llm")
    }
    counts["total"] = sum(counts.values())
    return counts
