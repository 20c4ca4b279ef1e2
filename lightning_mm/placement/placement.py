"""Placement: how one component (vision, projector, llm) trains — frozen, full fine-tuning or LoRA.

Pure torch/peft logic, no Lightning: a :class:`Placement` is applied to a component's own module
(:func:`apply_placement`) or to every component of a network at once (:func:`apply_placements`), and the summary table
reports what trains. The Lightning callbacks that declare placements in recipes live in
:mod:`lightning_mm.callbacks.component`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from lightning_mm.models.component import COMPONENTS, as_component, check_component
from lightning_mm.placement.lora import (
    adapter_settings,
    inject_lora,
    is_lora_parameter,
    lora_layers,
    resolve_lora_targets,
)

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
    """

    mode: str = "full"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown placement mode {self.mode!r}; modes are {MODES}.")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                object.__setattr__(self, "target_modules", (self.target_modules,))
            else:
                object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}.")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")

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
        if self.mode != other.mode:
            return False
        if self.mode != "lora":
            return True
        return (self.r, float(self.alpha), self.target_modules) == (other.r, float(other.alpha), other.target_modules)

    def describe(self) -> str:
        """Short text for tables: ``frozen``, ``full`` or ``lora r=8 a=16``."""
        if self.mode != "lora":
            return self.mode
        return f"lora r={self.r} a={self.alpha:g}"

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


def apply_placement(module: nn.Module, component: str, placement: Placement) -> None:
    """Make ``module`` (one component) train as ``placement`` says, in place and idempotently.

    LoRA adapters are injected with peft on the component's own module, once: applying the same LoRA placement again
    only resets trainability; a different one on a component that already carries adapters raises.

    Args:
        module: The component's module (``network.vision``, ``network.projector`` or ``network.llm``).
        component: Its name (chooses the default LoRA targets and names it in errors).
        placement: What trains.

    Raises:
        ValueError: if the component already carries LoRA adapters that the placement does not describe.
    """
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


def apply_placements(network: nn.Module, placements: Mapping[str, Placement]) -> None:
    """Apply each placement to its component of ``network``, then freeze the parameters that never run.

    Components are placed in the order ``vision``, ``projector``, ``llm``; a component without a placement keeps its
    trainability. Parameters that never take part in ``forward`` (a vision tower's blocks after its feature layer)
    are frozen in every component, placed or not. Idempotent, like :func:`apply_placement`.

    Args:
        network: A :class:`~lightning_mm.models.VisionLanguageModel` (or any module with ``vision``, ``projector``
            and ``llm`` submodules).
        placements: ``{component: Placement}``.

    Raises:
        ValueError: for an unknown component name, or as :func:`apply_placement`.
    """
    for name in sorted(placements):
        check_component(name)
    for component in COMPONENTS:
        if component in placements:
            apply_placement(getattr(network, component), component, placements[component])
    for component in COMPONENTS:
        freeze_unused(getattr(network, component), component)


def placement_rows(components: Mapping[str, nn.Module], placements: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per component: ``component``, ``mode``, ``trainable``, ``total`` (parameter counts) and ``unused``.

    Undeclared components are described by what trains: ``full`` (every used parameter), ``frozen`` or ``partial``.
    Parameters that never run (``unused``) count in ``total`` and never in ``trainable``.
    """
    rows = []
    for name, module in components.items():
        unused = unused_parameter_names(module, name)
        params = dict(module.named_parameters())  # tied weights counted once
        total = sum(p.numel() for p in params.values())
        trainable = sum(p.numel() for p in params.values() if p.requires_grad)
        n_unused = sum(p.numel() for n, p in params.items() if n in unused)
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
