"""The reference model of a preference objective: the network with its LoRA adapters switched off, or a frozen copy.

Under LoRA the reference is the same network with every adapter disabled (peft's ``disable_adapters`` flag on each
LoRA layer, as peft's ``disable_adapter`` context does for a ``PeftModel``): no second copy of the weights. Without
adapters, a frozen deep copy of the network taken before training (it costs one more set of weights, never any
gradient or optimiser state).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from lightning_mm.placement.lora import lora_layers

__all__ = ["REFERENCES", "adapters_disabled", "frozen_copy", "has_adapters"]

#: ``auto``: ``adapters`` when the network holds LoRA adapters, else ``copy``; ``adapters``: the network with its
#: adapters disabled; ``copy``: a frozen copy of the network as built; ``none``: no reference (SimPO).
REFERENCES = ("auto", "adapters", "copy", "none")


def has_adapters(network: nn.Module) -> bool:
    """Whether ``network`` holds a peft LoRA layer."""
    return bool(lora_layers(network))


@contextmanager
def adapters_disabled(network: nn.Module) -> Iterator[None]:
    """Run ``network`` without its LoRA adapters (each layer's base output only); restored on exit.

    Merged adapters cannot be switched off: they are refused.
    """
    layers = list(lora_layers(network).items())
    merged = [name for name, layer in layers if getattr(layer, "merged_adapters", None)]
    if merged:
        raise RuntimeError(f"LoRA adapters are merged into {merged[0]!r}: the base model is gone, use reference=copy")
    before = [layer._disable_adapters for _, layer in layers]
    try:
        for _, layer in layers:
            layer._disable_adapters = True  # what peft's enable_adapters(False) sets, without touching requires_grad
        yield
    finally:
        for (_, layer), flag in zip(layers, before, strict=True):
            layer._disable_adapters = flag


def frozen_copy(network: nn.Module) -> nn.Module:
    """A deep copy of ``network`` with no parameter requiring grad, in eval mode."""
    ref = copy.deepcopy(network)
    ref.requires_grad_(False)
    return ref.eval()
