"""``create_model``: zoo name -> ready :class:`~lightning_mm.MultimodalModule`, and parameter counts of an entry."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from lightning_mm.zoo.registry import get_spec
from lightning_mm.zoo.spec import ModelSpec, build_network

if TYPE_CHECKING:
    from lightning_mm.module import MultimodalModule

__all__ = ["create_model", "parameter_counts"]

_SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelSpec)) - {"name"}


def create_model(
    name: str,
    pretrained: bool = False,
    device: str | torch.device | None = None,
    module_class: type[MultimodalModule] | None = None,
    **overrides: Any,
) -> MultimodalModule:
    """Build a zoo model as a ready :class:`~lightning_mm.MultimodalModule` (network built, placements applied).

    Like ``timm.create_model``: nothing is downloaded unless ``pretrained=True``. On the meta device a complete zoo
    entry builds offline without touching its tokenizer (shapes and parameter counts only, no memory).

    Args:
        name: Zoo name (:func:`~lightning_mm.list_models`), or ``hf:<hub id or directory>`` for a transformers
            LLaVA checkpoint (spec derived from its config).
        pretrained: Load the weights the spec names (a whole VLM checkpoint, else timm tag and LLM checkpoint; the
            projector file).
        device: Device to build on; ``"meta"`` allocates nothing (not with ``pretrained=True``). Other devices: built
            on the CPU, then moved.
        module_class: A :class:`~lightning_mm.MultimodalModule` subclass to instantiate (default: the base class).
        **overrides: :class:`~lightning_mm.zoo.ModelSpec` fields (``projector="linear"``,
            ``llm_config={"num_hidden_layers": 4}``; dict fields are merged), and any other keyword argument of the
            module (``warmup_ratio=0.1``).

    Returns:
        The module, with ``module.network`` built.

    Raises:
        ValueError: for an unknown name or ``pretrained=True`` on the meta device.
    """
    if module_class is None:
        from lightning_mm.module import MultimodalModule as module_class  # noqa: N813  (import cycle: module -> zoo)
    device = torch.device(device) if device is not None else None
    if pretrained and device is not None and device.type == "meta":
        raise ValueError("pretrained=True loads weights and cannot build on the meta device.")
    get_spec(name)  # a clear error for an unknown name before anything is built
    spec_overrides = {k: v for k, v in overrides.items() if k in _SPEC_FIELDS}
    module_kwargs = {k: v for k, v in overrides.items() if k not in _SPEC_FIELDS}
    module = module_class(model=name, model_overrides=spec_overrides or None, pretrained=pretrained, **module_kwargs)
    if device is not None and device.type == "meta":
        with torch.device("meta"):
            module.configure_model()
        return module
    module.configure_model()
    return module.to(device) if device is not None else module


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
