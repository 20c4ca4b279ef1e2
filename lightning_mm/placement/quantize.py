"""Quantised frozen base (QLoRA): a component's frozen linear layers stored by bitsandbytes in 4 or 8 bits.

A placement with ``quantize`` (``nf4``, ``fp4`` or ``int8``) replaces every ``nn.Linear`` of its component (an LLM's
output projection excepted) with bitsandbytes' ``Linear4bit`` / ``Linear8bitLt``, layer by layer: each layer's float
weight is quantised and freed before the next one, so the component never exists twice. peft's LoRA then wraps the
quantised layers as it wraps plain ones (they are ``nn.Linear`` subclasses). A pretrained LLM is quantised while it
loads instead (:func:`bnb_config`, transformers' ``BitsAndBytesConfig``): its layers arrive quantised and are only
configured here.

bitsandbytes is optional (``pip install "lightning_mm[quant]"``): it is imported where it is used, and a placement
that asks for quantisation without it is a :class:`~lightning_mm.errors.ConfigError` naming the extra.

On the layers made or configured here, bitsandbytes' CPU inference repacking of 4-bit weights is switched off (it
rewrites a weight the first time an eval-mode forward runs without grad, and the repacked format has no backward:
training after a validation pass would lose the input gradients), and a state-dict pre-hook restores the quantisation
statistics that a whole checkpoint saves beside each packed weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import BitsAndBytesConfig
from transformers.pytorch_utils import Conv1D

from lightning_mm.errors import ConfigError

__all__ = [
    "FOUR_BIT",
    "QUANT_TYPES",
    "bnb_config",
    "check_quantize",
    "dequantize",
    "is_quantized_layer",
    "llm_quantization",
    "parameter_numel",
    "quantizable_layers",
    "quantize_component",
    "quantized_layers",
    "quantized_state_keys",
    "refuse_quantized_sharding",
    "require_bitsandbytes",
]


QUANT_TYPES = ("nf4", "fp4", "int8")
FOUR_BIT = ("nf4", "fp4")
QUANTIZABLE_COMPONENTS = ("vision", "llm")
BLOCKSIZE = 64  # bitsandbytes' 4-bit block: one absmax per 64 weights
INSTALL_HINT = 'pip install "lightning_mm[quant]"'


def require_bitsandbytes(what: str = "quantize") -> Any:
    """The ``bitsandbytes`` module, or a :class:`ConfigError` naming the extra that installs it."""
    try:
        import bitsandbytes
    except ImportError as err:
        raise ConfigError(
            f"{what} needs bitsandbytes, which is not installed: install the extra with `{INSTALL_HINT}`."
        ) from err
    return bitsandbytes


def check_quantize(component: str, mode: str, quantize: str | None) -> None:
    """Refuse, before anything is built, quantisation that cannot train: a fully trained or unknown component.

    Raises:
        ConfigError: naming the component and the placement key.
    """
    if quantize is None:
        return
    if component not in QUANTIZABLE_COMPONENTS:
        raise ConfigError(
            f"quantize={quantize!r} on the {component}: only the {' and '.join(QUANTIZABLE_COMPONENTS)} can be "
            "quantised (their frozen linear layers); drop `quantize` for the projector."
        )
    if mode == "full":
        raise ConfigError(
            f"quantize={quantize!r} on the {component}, which trains fully (mode 'full'): quantised weights are "
            "frozen. Use mode 'lora' (QLoRA) or 'frozen' with quantize, or drop quantize."
        )


def is_quantized_layer(layer: nn.Module) -> bool:
    """Whether ``layer`` is a bitsandbytes 4-bit or 8-bit linear layer (checked without importing bitsandbytes)."""
    return type(layer).__module__.startswith("bitsandbytes.") and isinstance(layer, nn.Linear)


def quantized_layers(module: nn.Module) -> dict[str, nn.Module]:
    """The bitsandbytes linear layers inside ``module``, by path relative to it."""
    return {name: m for name, m in module.named_modules() if is_quantized_layer(m)}


def parameter_numel(p: torch.Tensor) -> int:
    """Elements of a parameter as the model sees it: a packed 4-bit weight counts its unpacked (out, in) shape."""
    state = getattr(p, "quant_state", None)
    return int(torch.Size(state.shape).numel()) if state is not None else p.numel()


def _output_embeddings(module: nn.Module) -> nn.Module | None:
    get = getattr(module, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return getattr(head, "base_layer", head)


def quantizable_layers(module: nn.Module, component: str) -> Iterator[tuple[str, nn.Module]]:
    """(path, layer) of each layer of ``module`` to quantise; a linear-like layer bitsandbytes cannot take raises."""
    head = _output_embeddings(module)
    for name, layer in module.named_modules():
        if layer is head or is_quantized_layer(layer) or ".lora_" in f".{name}":
            continue
        if type(layer) is nn.Linear:
            yield name, layer
        elif isinstance(layer, nn.Linear | Conv1D):
            raise ConfigError(
                f"quantize: the {component}'s layer {name!r} is a {type(layer).__name__}, which bitsandbytes cannot "
                "quantise (it replaces plain nn.Linear layers only; a subclass may read its weight directly). "
                f"Drop quantize on the {component}."
            )


def _swap(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, attr, new)


def _quantize_linear(layer: nn.Linear, quantize: str, double_quant: bool, compute_dtype: torch.dtype) -> nn.Module:
    """A bitsandbytes layer holding ``layer``'s weight quantised (quantised from the weight as stored)."""
    bnb = require_bitsandbytes()
    weight = layer.weight.detach()
    bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().to(compute_dtype), requires_grad=False)
    if quantize in FOUR_BIT:
        packed, state = bnb.functional.quantize_4bit(
            weight.contiguous(), blocksize=BLOCKSIZE, compress_statistics=double_quant, quant_type=quantize
        )  # packed: (out * in / 2, 1) uint8
        new = bnb.nn.Linear4bit(
            layer.in_features,
            layer.out_features,
            bias=bias is not None,
            compute_dtype=compute_dtype,
            compress_statistics=double_quant,
            quant_type=quantize,
            device="meta",
        )
        new.weight = bnb.nn.Params4bit(
            packed,
            requires_grad=False,
            quant_state=state,
            blocksize=BLOCKSIZE,
            compress_statistics=double_quant,
            quant_type=quantize,
            bnb_quantized=True,
        )
        new.quant_state = state
    else:
        new = bnb.nn.Linear8bitLt(
            layer.in_features, layer.out_features, bias=bias is not None, has_fp16_weights=False, device="meta"
        )
        params = bnb.nn.Int8Params(weight.to(torch.float16), requires_grad=False, has_fp16_weights=False)
        new.weight = params._quantize(weight.device)  # (out, in) int8 + per-row scales SCB (out,)
    if bias is not None:
        new.bias = bias
    configure_layer(new)
    return new


def configure_layer(layer: nn.Module) -> None:
    """Make a bitsandbytes layer compute one way in training and evaluation, and load its own checkpoints.

    4-bit layers: no CPU inference repacking (see the module docstring), and a state-dict pre-hook that restores the
    quantisation statistics (``weight.absmax``, ``weight.quant_map``, ...) saved beside the packed weight, which
    bitsandbytes itself leaves unread.
    """
    if hasattr(layer, "quant_state"):  # Linear4bit
        layer.support_avx512bf16_for_cpu = False
        if not getattr(layer, "_lmm_load_hook", False):
            layer.register_load_state_dict_pre_hook(_load_4bit_state)
            layer._lmm_load_hook = True


def _load_4bit_state(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook of a ``Linear4bit``: rebuild its weight from the packed data and saved statistics."""
    start = prefix + "weight."
    stats = {k[len(start) :]: state_dict.pop(k) for k in list(state_dict) if k.startswith(start)}
    packed = state_dict.get(prefix + "weight")
    if not stats or packed is None:
        return
    bnb = require_bitsandbytes()
    device = module.weight.device
    module.weight = bnb.nn.Params4bit.from_prequantized(packed, stats, requires_grad=False, device=device)
    module.quant_state = module.weight.quant_state


def quantize_component(
    module: nn.Module,
    component: str,
    quantize: str,
    double_quant: bool = False,
    compute_dtype: torch.dtype = torch.bfloat16,
) -> int:
    """Replace the linear layers of one component with bitsandbytes layers, in place, one layer at a time.

    Every plain ``nn.Linear`` of the component is quantised, the LLM's output projection excepted (it stays in the
    storage dtype, as in QLoRA). Layers that are quantised already (a pretrained LLM loaded with
    :func:`bnb_config`) are configured, not quantised again; idempotent.

    Args:
        module: The component's module (before LoRA is injected).
        component: ``vision`` or ``llm`` (names it in errors).
        quantize: ``nf4``, ``fp4`` or ``int8``.
        double_quant: 4-bit only: quantise the per-block scales too (about 0.37 bits per weight saved).
        compute_dtype: Dtype 4-bit layers compute in (their input is cast to it and the output cast back).

    Returns:
        The number of layers quantised now.

    Raises:
        ConfigError: bitsandbytes missing, or a linear-like layer it cannot quantise (naming the component and layer).
    """
    require_bitsandbytes(f"quantize={quantize!r} on the {component}")
    todo = list(quantizable_layers(module, component))  # raises for an unquantisable layer before anything changes
    for name, layer in todo:
        _swap(module, name, _quantize_linear(layer, quantize, double_quant, compute_dtype))
        del layer  # its float weight is freed before the next layer is quantised
    for layer in quantized_layers(module).values():
        configure_layer(layer)
    return len(todo)


def dequantize(module: nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Replace every bitsandbytes layer inside ``module`` with an ``nn.Linear`` of its dequantised weight (in place).

    Inside a peft LoRA layer the base layer is replaced, so the adapters stay; the result computes what the quantised
    layer computed, with plain torch (the reference of the exactness tests, and the first step of a merge).

    Args:
        module: Any module.
        dtype: Dtype of the dequantised weights and biases.

    Returns:
        The number of layers replaced.
    """
    layers = quantized_layers(module)
    if not layers:
        return 0
    bnb = require_bitsandbytes("dequantising")
    for name, layer in layers.items():
        weight = layer.weight
        if hasattr(layer, "quant_state"):  # Linear4bit: (out * in / 2, 1) packed -> (out, in)
            dense = bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
        else:  # Linear8bitLt: int8 rows scaled by SCB / 127
            scb = weight.SCB if getattr(weight, "SCB", None) is not None else layer.state.SCB
            dense = weight.data.float() * (scb.float().unsqueeze(1) / 127.0)  # (out, in)
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        plain.weight = nn.Parameter(dense.to(dtype), requires_grad=False)
        if layer.bias is not None:
            plain.bias = nn.Parameter(layer.bias.detach().to(dtype), requires_grad=False)
        _swap(module, name, plain)
    return len(layers)


def quantized_state_keys(module: nn.Module) -> set[str]:
    """State-dict keys of ``module`` that hold quantised weights and their statistics (not parameters of their own).

    ``weight`` and ``weight.absmax`` / ``weight.quant_map`` / ... of 4-bit layers, ``weight``, ``SCB`` and
    ``weight_format`` of 8-bit ones: what an adapter-only checkpoint leaves out with the frozen base.
    """
    keys: set[str] = set()
    for name, layer in quantized_layers(module).items():
        prefix = f"{name}." if name else ""
        own = layer._save_to_state_dict  # the layer's own entries (no children)
        entries: dict[str, Any] = {}
        own(entries, prefix, keep_vars=True)
        keys |= {k for k in entries if k != prefix + "bias"}
    return keys


def bnb_config(quantize: str, double_quant: bool = False, compute_dtype: torch.dtype = torch.bfloat16) -> Any:
    """transformers' ``BitsAndBytesConfig`` that loads a pretrained LLM quantised as :func:`quantize_component` does.

    The output projection is left unquantised (transformers' default), as here.
    """
    require_bitsandbytes(f"quantize={quantize!r} on the llm")
    if quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=0.0)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantize,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def llm_quantization(placement: Any, storage_dtype: torch.dtype | None = None) -> Any:
    """The ``BitsAndBytesConfig`` a pretrained LLM loads with under ``placement`` (None: not quantised).

    Args:
        placement: The LLM's :class:`~lightning_mm.placement.Placement` (or None).
        storage_dtype: The frozen storage dtype: float16 makes float16 the compute dtype, anything else bfloat16.
    """
    quantize = getattr(placement, "quantize", None)
    if quantize is None:
        return None
    check_quantize("llm", placement.mode, quantize)
    compute = torch.float16 if storage_dtype == torch.float16 else torch.bfloat16
    return bnb_config(quantize, placement.double_quant, compute)


def refuse_quantized_sharding(quantized: dict[str, str], strategy: str) -> None:
    """Refuse FSDP2 sharding of a quantised component, before anything is sharded.

    bitsandbytes keeps a 4-bit weight's quantisation state (block scales, code book) beside the parameter, not in it,
    and an 8-bit weight's row scales likewise: ``fully_shard`` shards the packed bytes but not the state, and its
    mixed-precision policy would cast the packed bytes as numbers.

    Args:
        quantized: Component -> quantisation type of the quantised components (none: nothing to refuse).
        strategy: The strategy's class name, for the message.

    Raises:
        ConfigError: naming the components.
    """
    if not quantized:
        return
    what = ", ".join(f"{c} ({q})" for c, q in quantized.items())
    raise ConfigError(
        f"{strategy} cannot shard quantised components ({what}): FSDP2 shards parameters, and bitsandbytes keeps the "
        "quantisation statistics outside them. Train QLoRA with one process per device (strategy 'auto' or 'ddp'; "
        "4-bit weights of a 7B LLM take about 4 GB), or drop `quantize` to shard bf16 frozen weights."
    )
