"""What trains in each component (frozen, full fine-tuning, LoRA): plain torch and peft, no Lightning.

:class:`Placement` says how one component trains; :func:`apply_placements` applies placements to a network,
:func:`inject_lora` / :func:`merge_lora` add and merge peft LoRA adapters scoped to one component, and
:class:`DropoutLinear` is LoRA's input dropout fused into ``lora_A``. The Lightning callbacks that declare placements
in recipes (:mod:`lightning_mm.callbacks`) and the LightningModule build on this package.
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

__all__ = [
    "ADAPTER_NAME",
    "DEFAULT_TARGETS",
    "MODES",
    "DropoutLinear",
    "Placement",
    "adapter_settings",
    "apply_placement",
    "apply_placements",
    "dropout_linear",
    "format_placement_table",
    "freeze_unused",
    "fuse_lora_dropout",
    "inject_lora",
    "is_lora_parameter",
    "lora_layers",
    "merge_lora",
    "placement_rows",
    "resolve_lora_targets",
    "unused_parameter_names",
]
