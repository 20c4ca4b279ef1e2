"""``create_model``: zoo name -> ready :class:`~lightning_mm.MultimodalModule` (above both the zoo and the module)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lightning_mm.module import MultimodalModule
from lightning_mm.zoo import ModelSpec, get_spec

__all__ = ["create_model"]

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
    module_class = MultimodalModule if module_class is None else module_class
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
