"""Placement: how one component (vision, projector, llm) trains — frozen, full fine-tuning or LoRA.

Pure torch/peft logic, no Lightning: a :class:`Placement` is applied to a component's own module
(:func:`apply_placement`) or to every component of a network at once (:func:`apply_placements`), and the summary table
reports what trains. A placement also says how the frozen weights are stored: in the compute dtype
(:mod:`~lightning_mm.placement.storage_dtype`) or quantised by bitsandbytes (:mod:`~lightning_mm.placement.quantize`).
The Lightning callbacks that declare placements in recipes live in :mod:`lightning_mm.callbacks.component`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_mm.errors import ConfigError
from lightning_mm.models.component import COMPONENTS, as_component, check_component
from lightning_mm.placement.lora import (
    adapter_settings,
    inject_lora,
    is_lora_parameter,
    lora_layers,
    resolve_lora_targets,
)
from lightning_mm.placement.quantize import FOUR_BIT, QUANT_TYPES, check_quantize, parameter_numel, quantize_component
from lightning_mm.placement.storage_dtype import apply_storage_dtype, component_storage_dtype, parse_storage_dtype

__all__ = [
    "MODES",
    "Placement",
    "apply_placement",
    "apply_placements",
    "format_placement_table",
    "freeze_unused",
    "placement_rows",
    "unused_parameter_names",
]

MODES = ("frozen", "full", "lora")


@dataclass(frozen=True)
class Placement:
    """How one component trains.

    Attributes:
        mode: ``frozen`` (nothing trains), ``full`` (every parameter that takes part in ``forward`` trains) or
            ``lora`` (the base is frozen, peft LoRA adapters on ``target_modules`` train).
        r: LoRA rank.
        alpha: LoRA alpha (the update is scaled by ``alpha / r``).
        dropout: Dropout on the LoRA branch input.
        target_modules: LoRA targets, matched against module paths relative to the component (see
            :func:`~lightning_mm.placement.lora.resolve_lora_targets`); None: the component's defaults.
        lr: Learning rate of this component's optimiser groups (None: the optimiser's own).
        quantize: Store the component's frozen linear layers quantised by bitsandbytes: ``nf4``, ``fp4`` (4-bit,
            ``Linear4bit``) or ``int8`` (``Linear8bitLt``); with mode ``lora`` this is QLoRA. Vision tower and LLM
            only, never with mode ``full``. None: not quantised.
        double_quant: 4-bit only: quantise the per-block scales too (QLoRA's double quantisation).
        storage_dtype: Dtype of the component's frozen parameters: ``float32``, ``bfloat16`` or ``float16``. None:
            the trainer's compute dtype (bfloat16 under ``bf16-mixed``, float32 under ``32-true``). Trainable
            parameters always keep float32 master weights.
    """

    mode: str = "full"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    lr: float | None = None
    quantize: str | None = None
    double_quant: bool = False
    storage_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"Unknown placement mode {self.mode!r}; modes are {', '.join(MODES)}.")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                object.__setattr__(self, "target_modules", (self.target_modules,))
            else:
                object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.r < 1:
            raise ConfigError(f"LoRA rank `r` must be >= 1, got {self.r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA `dropout` must be in [0, 1), got {self.dropout}.")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"`lr` must be positive, got {self.lr}.")
        if self.quantize is not None and self.quantize not in QUANT_TYPES:
            raise ConfigError(f"Unknown quantize {self.quantize!r}; known: {', '.join(QUANT_TYPES)} (or None).")
        if self.double_quant and self.quantize not in FOUR_BIT:
            raise ConfigError(f"double_quant applies to 4-bit quantize ({', '.join(FOUR_BIT)}), not {self.quantize!r}.")
        parse_storage_dtype(self.storage_dtype)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form stored in checkpoints."""
        data = dataclasses.asdict(self)
        if self.target_modules is not None:
            data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Placement:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def same_weights(self, other: Placement) -> bool:
        """Whether both placements give the component the same parameters (``lr`` and ``dropout`` may differ)."""
        if (self.mode, self.quantize, bool(self.double_quant)) != (
            other.mode,
            other.quantize,
            bool(other.double_quant),
        ):
            return False
        if self.mode != "lora":
            return True
        return (self.r, float(self.alpha), self.target_modules) == (other.r, float(other.alpha), other.target_modules)

    def describe(self) -> str:
        """Short text for tables: ``frozen``, ``full``, ``lora r=8 a=16`` or ``lora r=8 a=16 nf4``."""
        text = self.mode if self.mode != "lora" else f"lora r={self.r} a={self.alpha:g}"
        return text if self.quantize is None else f"{text} {self.quantize}" + ("+dq" if self.double_quant else "")

    def apply(self, module: Any, component: str) -> None:
        """Apply this placement to ``module.component(component)`` (``module``: a built MultimodalModule)."""
        apply_placement(module.component(component), component, self)


def unused_parameter_names(module: nn.Module, component: str | None = None) -> set[str]:
    """Parameters of ``module`` that never take part in ``forward`` (a vision tower's blocks after its feature layer).

    Args:
        module: A component's module.
        component: Its name (None: its interface is chosen from the module alone,
            :func:`~lightning_mm.models.component.as_component`).
    """
    return set(as_component(module, component).unused_parameter_names())


def freeze_unused(module: nn.Module, component: str | None = None) -> None:
    """Freeze the parameters that never take part in ``forward``: no placement may make them trainable."""
    unused = unused_parameter_names(module, component)
    for name, p in module.named_parameters():
        if name in unused:
            p.requires_grad_(False)


def _check_existing_lora(module: nn.Module, component: str, placement: Placement, unused: set[str]) -> None:
    existing = lora_layers(module)
    if placement.mode != "lora":
        raise ValueError(
            f"The {component} already carries LoRA adapters on {len(existing)} layers, so it cannot become "
            f"{placement.mode!r}. Merge them first (`lightning-mm export`) or rebuild the model."
        )
    wanted = resolve_lora_targets(module, component, placement.target_modules, unused)
    settings = {adapter_settings(layer) for layer in existing.values()}
    if sorted(existing) != wanted or settings != {(placement.r, float(placement.alpha))}:
        raise ValueError(
            f"The {component} already carries LoRA adapters (rank/alpha {sorted(settings)}, {len(existing)} layers) "
            f"that differ from the declared placement ({placement.describe()}, {len(wanted)} layers)."
        )


def apply_placement(
    module: nn.Module, component: str, placement: Placement, storage_dtype: torch.dtype | None = None
) -> None:
    """Make ``module`` (one component) train as ``placement`` says, in place and idempotently.

    A quantised placement first replaces the component's linear layers with bitsandbytes layers
    (:func:`~lightning_mm.placement.quantize.quantize_component`). LoRA adapters are injected with peft on the
    component's own module, once: applying the same LoRA placement again only resets trainability; a different one on
    a component that already carries adapters raises. Last, frozen parameters are stored in the storage dtype.

    Args:
        module: The component's module (``network.vision``, ``network.projector`` or ``network.llm``).
        component: Its name (chooses the default LoRA targets and names it in errors).
        placement: What trains.
        storage_dtype: Frozen storage dtype when the placement sets none (the trainer's compute dtype; None: keep).

    Raises:
        ValueError: if the component already carries LoRA adapters that the placement does not describe.
        ConfigError: for quantisation of a fully trained component, of the projector, of a layer bitsandbytes cannot
            quantise, or without bitsandbytes.
    """
    storage_dtype = component_storage_dtype(placement, storage_dtype, component)
    if placement.quantize is not None:
        check_quantize(component, placement.mode, placement.quantize)
        compute = torch.float16 if storage_dtype == torch.float16 else torch.bfloat16
        quantize_component(module, component, placement.quantize, placement.double_quant, compute)
    unused = unused_parameter_names(module, component)
    if lora_layers(module):
        _check_existing_lora(module, component, placement, unused)
    elif placement.mode == "lora":
        targets = resolve_lora_targets(module, component, placement.target_modules, unused)
        inject_lora(module, targets, placement.r, placement.alpha, placement.dropout)
    for name, p in module.named_parameters():
        if name in unused or placement.mode == "frozen":
            trainable = False
        elif placement.mode == "full":
            trainable = True
        else:
            trainable = is_lora_parameter(name)
        p.requires_grad_(trainable)
        if trainable and placement.quantize is not None and p.dtype != torch.float32:
            p.data = p.data.float()  # peft makes adapters of a bitsandbytes layer in its compute dtype: float32 masters
    apply_storage_dtype(module, storage_dtype)


def apply_placements(
    network: nn.Module, placements: Mapping[str, Placement], storage_dtype: torch.dtype | None = None
) -> None:
    """Apply each placement to its component of ``network``, then freeze the parameters that never run.

    Components are placed in the order ``vision``, ``projector``, ``llm``; a component without a placement keeps its
    trainability. Parameters that never take part in ``forward`` (a vision tower's blocks after its feature layer)
    are frozen in every component, placed or not. Then every component's frozen parameters are stored in its storage
    dtype (its placement's ``storage_dtype``, else ``storage_dtype``) and its trainable ones in float32. Idempotent,
    like :func:`apply_placement`.

    Args:
        network: A :class:`~lightning_mm.models.VisionLanguageModel` (or any module with ``vision``, ``projector``
            and ``llm`` submodules).
        placements: ``{component: Placement}``.
        storage_dtype: Default frozen storage dtype (the trainer's compute dtype,
            :func:`~lightning_mm.placement.storage_dtype.storage_dtype_for_precision`); None keeps the dtypes.

    Raises:
        ValueError: for an unknown component name, or as :func:`apply_placement`.
    """
    for name in sorted(placements):
        check_component(name)
    for component in COMPONENTS:
        if component in placements:
            apply_placement(getattr(network, component), component, placements[component], storage_dtype)
    for component in COMPONENTS:
        module = getattr(network, component)
        freeze_unused(module, component)
        apply_storage_dtype(module, component_storage_dtype(placements.get(component), storage_dtype, component))


def placement_rows(components: Mapping[str, nn.Module], placements: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per component: ``component``, ``mode``, ``trainable``, ``total`` (parameter counts) and ``unused``.

    Undeclared components are described by what trains: ``full`` (every used parameter), ``frozen`` or ``partial``.
    Parameters that never run (``unused``) count in ``total`` and never in ``trainable``.
    """
    rows = []
    for name, module in components.items():
        unused = unused_parameter_names(module, name)
        params = dict(module.named_parameters())  # tied weights counted once
        total = sum(parameter_numel(p) for p in params.values())  # quantised weights by their unpacked size
        trainable = sum(p.numel() for p in params.values() if p.requires_grad)
        n_unused = sum(parameter_numel(p) for n, p in params.items() if n in unused)
        placement = placements.get(name)
        if placement is not None and hasattr(placement, "describe"):
            mode = placement.describe()
        elif trainable == 0:
            mode = "frozen"
        else:
            mode = "full" if trainable == total - n_unused else "partial"
        rows.append({"component": name, "mode": mode, "trainable": trainable, "total": total, "unused": n_unused})
    return rows


def format_placement_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows of :func:`placement_rows` as an aligned text table (or a Markdown table, for TensorBoard)."""
    header = ("component", "mode", "trainable params", "total params")
    body = [(r["component"], r["mode"], f"{r['trainable']:,}", f"{r['total']:,}") for r in rows]
    body.append(("all", "", f"{sum(r['trainable'] for r in rows):,}", f"{sum(r['total'] for r in rows):,}"))
    notes = [
        f"{r['component']}: {r['unused']:,} parameters after the feature layer never run and stay frozen"
        for r in rows
        if r["unused"]
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + [""] + notes)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    fmt = [str.ljust, str.ljust, str.rjust, str.rjust]
    lines = ["  ".join(f(c, w) for f, c, w in zip(fmt, row, widths, strict=True)) for row in [header, *body]]
    return "\n".join(lines + notes)
