"""What trains in each component (frozen, full fine-tuning, LoRA) and how its frozen weights are stored.

Plain torch, peft and (optionally) bitsandbytes, no Lightning. :class:`Placement` says how one component trains;
:func:`apply_placements` applies placements to a network, :func:`inject_lora` / :func:`merge_lora` add and merge peft
LoRA adapters scoped to one component, and :class:`DropoutLinear` is LoRA's input dropout fused into ``lora_A``.
Frozen weights are stored in the compute dtype (:mod:`~lightning_mm.placement.storage_dtype`) or quantised by
bitsandbytes (:mod:`~lightning_mm.placement.quantize`: QLoRA); :mod:`~lightning_mm.placement.weight_memory` counts
their bytes. The Lightning callbacks that declare placements in recipes (:mod:`lightning_mm.callbacks`) and the
LightningModule build on this package.
"""

from lightning_mm.placement.lora import (
    ADAPTER_NAME,
    DEFAULT_TARGETS,
    adapter_settings,
    fuse_lora_dropout,
    inject_lora,
    is_lora_parameter,
    lora_layers,
    merge_lora,
    resolve_lora_targets,
)
from lightning_mm.placement.lora_dropout import DropoutLinear, dropout_linear
from lightning_mm.placement.placement import (
    MODES,
    Placement,
    apply_placement,
    apply_placements,
    format_placement_table,
    freeze_unused,
    placement_rows,
    unused_parameter_names,
)
from lightning_mm.placement.quantize import (
    QUANT_TYPES,
    dequantize,
    is_quantized_layer,
    quantize_component,
    quantized_layers,
    quantized_state_keys,
)
from lightning_mm.placement.storage_dtype import (
    STORAGE_DTYPES,
    apply_storage_dtype,
    storage_dtype_for_precision,
)
from lightning_mm.placement.weight_memory import predicted_bytes, quantized_linear_bytes, stored_bytes

__all__ = [
    "ADAPTER_NAME",
    "DEFAULT_TARGETS",
    "MODES",
    "QUANT_TYPES",
    "STORAGE_DTYPES",
    "DropoutLinear",
    "Placement",
    "adapter_settings",
    "apply_placement",
    "apply_placements",
    "apply_storage_dtype",
    "dequantize",
    "dropout_linear",
    "format_placement_table",
    "freeze_unused",
    "fuse_lora_dropout",
    "inject_lora",
    "is_lora_parameter",
    "is_quantized_layer",
    "lora_layers",
    "merge_lora",
    "placement_rows",
    "predicted_bytes",
    "quantize_component",
    "quantized_layers",
    "quantized_linear_bytes",
    "quantized_state_keys",
    "resolve_lora_targets",
    "storage_dtype_for_precision",
    "stored_bytes",
    "unused_parameter_names",
]
