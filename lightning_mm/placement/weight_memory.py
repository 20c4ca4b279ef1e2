"""Bytes of a network's weights: as stored (:func:`stored_bytes`), or predicted for placements from a meta build.

:func:`predicted_bytes` answers "how much memory do the weights of ``llava-1.5-7b`` take as float32, with a bf16
frozen base, or with an NF4 LLM?" without materialising anything: the network is built on the meta device, the
placements' LoRA adapters are injected there, and every parameter is counted at the size it would be stored at —
trainable ones in float32, frozen ones in the storage dtype, the linear layers a placement quantises at bitsandbytes'
size (packed weights plus their statistics). :func:`stored_bytes` counts a real network the same way, so the two agree
exactly (``tests/placement/test_weight_memory.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn

from lightning_mm.models.component import COMPONENTS
from lightning_mm.placement.placement import Placement, apply_placements
from lightning_mm.placement.quantize import BLOCKSIZE, FOUR_BIT, quantizable_layers, quantized_layers
from lightning_mm.placement.storage_dtype import component_storage_dtype

__all__ = ["predicted_bytes", "quantized_linear_bytes", "stored_bytes"]

_NESTED_BLOCKSIZE = 256  # double quantisation: one float32 scale per 256 block scales
_CODE_BYTES = {"4bit": 16 * 4, "nested_code": 256 * 4}  # 4-bit code book (16 float32), 8-bit code of the scales


def quantized_linear_bytes(out_features: int, in_features: int, quantize: str, double_quant: bool = False) -> int:
    """Bytes bitsandbytes stores for one (out, in) weight quantised as ``quantize`` (bias excluded).

    4-bit: the packed weight (n / 2 bytes), one absmax per 64-weight block (float32, or uint8 plus one float32 per
    256 blocks, a 256-entry code and an offset with double quantisation) and the 16-entry code book; int8: one byte
    per weight and one float32 scale per row.
    """
    n = out_features * in_features
    if quantize not in FOUR_BIT:
        return n + 4 * out_features
    blocks = -(-n // BLOCKSIZE)
    packed = -(-n // 2)
    if not double_quant:
        return packed + 4 * blocks + _CODE_BYTES["4bit"]
    nested = -(-blocks // _NESTED_BLOCKSIZE)
    return packed + blocks + 4 * nested + _CODE_BYTES["nested_code"] + _CODE_BYTES["4bit"] + 4


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _state_bytes(layer: nn.Module) -> int:
    """Bytes of a bitsandbytes layer's quantisation statistics (held beside its weight)."""
    state = getattr(layer, "quant_state", None) or getattr(layer.weight, "quant_state", None)
    if state is not None:  # 4-bit: absmax, code book, nested statistics
        total = _tensor_bytes(state.absmax) + _tensor_bytes(state.code)
        if state.nested:
            total += _tensor_bytes(state.state2.absmax) + _tensor_bytes(state.state2.code) + 4  # + offset
        return total
    scb = getattr(layer.weight, "SCB", None)
    scb = scb if scb is not None else getattr(getattr(layer, "state", None), "SCB", None)
    return 0 if scb is None else _tensor_bytes(scb)


def stored_bytes(module: nn.Module) -> dict[str, int]:
    """Bytes ``module``'s parameters take as stored: ``trainable``, ``frozen`` and ``total``.

    Each parameter counts once (tied weights), bitsandbytes weights with their statistics; buffers are left out.
    """
    trainable = frozen = 0
    for p in module.parameters():
        if p.requires_grad:
            trainable += _tensor_bytes(p)
        else:
            frozen += _tensor_bytes(p)
    frozen += sum(_state_bytes(layer) for layer in quantized_layers(module).values())
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def predicted_bytes(
    network: nn.Module, placements: Mapping[str, Placement], storage_dtype: torch.dtype | None = None
) -> dict[str, dict[str, int]]:
    """Bytes each component's parameters would take under ``placements``, counted on an unquantised build.

    Build ``network`` on the meta device (nothing is allocated); it is changed in place: the placements' adapters are
    injected (quantisation is counted, not done).

    Args:
        network: A :class:`~lightning_mm.models.VisionLanguageModel` without placements applied (meta is fine).
        placements: Component -> placement (``quantize`` and ``storage_dtype`` are read).
        storage_dtype: Default frozen storage dtype (the trainer's compute dtype; None: as built).

    Returns:
        Component (and ``all``) -> ``{"trainable", "frozen", "total"}`` bytes.
    """
    plain = {c: dataclasses.replace(p, quantize=None, double_quant=False) for c, p in placements.items()}
    apply_placements(network, plain, None)  # adapters and trainability only: sizes are counted below
    out: dict[str, dict[str, int]] = {}
    for component in COMPONENTS:
        module = getattr(network, component)
        placement = placements.get(component)
        dtype = component_storage_dtype(placement, storage_dtype, component)
        quantize = getattr(placement, "quantize", None)
        layers = [layer for _, layer in quantizable_layers(module, component)] if quantize else []
        quantized = {id(layer.weight): layer for layer in layers}
        biases = {id(layer.bias) for layer in layers if layer.bias is not None}  # kept in the compute dtype
        compute = torch.float16 if dtype == torch.float16 else torch.bfloat16
        trainable = frozen = 0
        for p in module.parameters():
            if p.requires_grad:
                trainable += p.numel() * 4 if p.dtype.is_floating_point else _tensor_bytes(p)
            elif id(p) in quantized:
                layer = quantized[id(p)]
                frozen += quantized_linear_bytes(
                    layer.out_features, layer.in_features, quantize, placement.double_quant
                )
            elif id(p) in biases:
                frozen += p.numel() * compute.itemsize
            else:
                size = (dtype or p.dtype).itemsize if p.dtype.is_floating_point else p.element_size()
                frozen += p.numel() * size
        out[component] = {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}
    out["all"] = {k: sum(out[c][k] for c in COMPONENTS) for k in ("trainable", "frozen", "total")}
    return out
