"""One interface per component of a VisionLanguageModel (``vision``, ``projector``, ``llm``).

Every question that depends on how a component is built is answered here, in one place per kind of component:

- ``blocks()``: its repeated blocks, in forward order (a timm tower's ``blocks`` or ``stages``, an LLM's decoder
  layers; none for an MLP projector);
- ``unused_parameter_names()``: the parameters that never take part in ``forward`` (a tower's blocks after its feature
  layer and its final norm): placements never make them trainable;
- ``lora_targets()``: the default LoRA targets (names or dotted suffixes of paths inside the component, ``all-linear``
  or ``re:<regex>``);
- ``shard_units()``: the modules FSDP shards one by one (FSDP1's wrap policy and FSDP2's ``fully_shard`` both take
  them from :func:`~lightning_mm.distributed.shard_units`); what no unit holds stays in the root unit;
- ``checkpoint_units()`` and ``enable_activation_checkpointing()``: the modules whose activations are recomputed in
  backward, and turning that on.

The placement layer (:mod:`lightning_mm.placement`: freezing what never runs, LoRA targets), activation checkpointing
(:meth:`VisionLanguageModel.enable_activation_checkpointing`) and sharding (FSDP1 and FSDP2) all ask
:func:`as_component`; :meth:`VisionLanguageModel.component` gives the interface of a network's component by name.
The interface is a view: it never wraps or renames modules, so state-dict keys stay ``vision.model.*``,
``projector.*``, ``llm.*``.

Plugging in a new tower or projector
------------------------------------
A module gets its interface from :func:`as_component`, in this order:

1. its class defines ``component_interface(self) -> Component``: that object (the way to describe a new module);
2. an ``llm``, or any transformers ``PreTrainedModel``: :class:`LanguageModelComponent`;
3. a ``vision`` module: :class:`TimmTowerComponent` (a timm model, or a module holding one as ``.model``, read at
   its ``feature_layer``);
4. anything else (a projector): :class:`ModuleComponent`, the defaults: no blocks, nothing unused, one sharding unit
   (the whole module), no activation checkpointing, every linear layer as LoRA target.

So a projector that is one small module (an MLP, a pixel-shuffle + MLP) needs nothing; a new tower or a projector with
repeated blocks subclasses the closest class, overrides the answers that differ and returns it from
``component_interface``::

    class TiledTowerComponent(TimmTowerComponent):
        def unused_parameter_names(self) -> list[str]:
            return [*super().unused_parameter_names(), *self.module.unused_merger_names()]

    class TiledTower(VisionTower):
        def component_interface(self) -> Component:
            return TiledTowerComponent(self, "vision")

Names returned by ``unused_parameter_names`` are relative to the component's module; blocks and units are modules
inside it.
"""

from __future__ import annotations

import types
from typing import Literal, Protocol

import torch
import torch.utils.checkpoint
from torch import nn
from transformers import PreTrainedModel

from lightning_mm.errors import ConfigError, did_you_mean
from lightning_mm.models.language import decoder_of

__all__ = [
    "ALL_LINEAR",
    "COMPONENTS",
    "DEFAULT_LORA_TARGETS",
    "Component",
    "ComponentName",
    "LanguageModelComponent",
    "ModuleComponent",
    "TimmTowerComponent",
    "as_component",
    "check_component",
    "checkpoint_activations",
    "repeated_modules",
]

COMPONENTS = ("vision", "projector", "llm")  # forward order
ComponentName = Literal["vision", "projector", "llm"]  # the names of COMPONENTS, as a type (CLI choices)


def check_component(name: str) -> str:
    """``name`` when it names a component; else a :class:`~lightning_mm.errors.ConfigError` with the close name."""
    if name not in COMPONENTS:
        raise ConfigError(
            f"Unknown component {name!r}.{did_you_mean(str(name), COMPONENTS)} Components: {', '.join(COMPONENTS)}."
        )
    return name


ALL_LINEAR = "all-linear"
# Default LoRA targets by component name. The vision names cover timm ViTs (fused ``qkv``) and the timm families that
# split q/k/v or gate the MLP (EVA: ``q_proj``..., ``fc1_g``/``fc1_x``); ``all-linear`` is every linear layer of the
# component (an LLM's output projection excluded).
DEFAULT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "vision": ("qkv", "q_proj", "k_proj", "v_proj", "proj", "fc1", "fc1_g", "fc1_x", "fc2"),
    "projector": (ALL_LINEAR,),
    "llm": (ALL_LINEAR,),
}
# Modules of a timm model after its last block: they only run on the final features, which a tower never reads
_TIMM_TAIL = ("norm.", "fc_norm.", "head", "attn_pool")


class Component(Protocol):
    """What every component answers (see the module docstring)."""

    module: nn.Module
    name: str | None

    def blocks(self) -> list[nn.Module]: ...

    def unused_parameter_names(self) -> list[str]: ...

    def lora_targets(self) -> tuple[str, ...]: ...

    def shard_units(self) -> list[nn.Module]: ...

    def checkpoint_units(self) -> list[nn.Module]: ...

    def enable_activation_checkpointing(self) -> None: ...


def repeated_modules(container: object) -> list[nn.Module]:
    """The modules of a non-empty ``nn.ModuleList`` / ``nn.Sequential`` (anything else: none)."""
    if isinstance(container, nn.ModuleList | nn.Sequential) and len(container):
        return list(container)
    return []


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    forward = type(self).forward  # the class's own forward (a sharding wrapper class inherits it)
    if self.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, self, *args, use_reentrant=False, **kwargs)
    return forward(self, *args, **kwargs)


def checkpoint_activations(module: nn.Module) -> None:
    """Recompute ``module``'s activations in backward instead of keeping them (non-reentrant checkpointing).

    The module keeps its class, names and state dict (its ``forward`` is rebound on the instance), so placements,
    adapters and sharding address it as before. Non-reentrant checkpointing gives gradients to parameters inside the
    module (e.g. LoRA in a frozen tower) even when its input does not require grad.
    """
    if getattr(module.forward, "__func__", None) is not _checkpointed_forward:
        module.forward = types.MethodType(_checkpointed_forward, module)


class ModuleComponent:
    """The default interface, and the base of the others: a projector, or any module that says nothing else.

    No blocks, no unused parameters, the whole module as one sharding unit, activation checkpointing of its blocks
    (none), the default LoRA targets of its component name (``all-linear`` without one).

    Args:
        module: The component's module.
        name: Its component name (``vision``, ``projector``, ``llm``), or None.
    """

    def __init__(self, module: nn.Module, name: str | None = None) -> None:
        self.module = module
        self.name = name

    def blocks(self) -> list[nn.Module]:
        """The repeated blocks, in forward order."""
        return []

    def unused_parameter_names(self) -> list[str]:
        """Parameters (names relative to the module) that never take part in ``forward``."""
        return []

    def lora_targets(self) -> tuple[str, ...]:
        """Default LoRA targets (see :func:`~lightning_mm.placement.resolve_lora_targets` for the forms)."""
        return DEFAULT_LORA_TARGETS.get(self.name, (ALL_LINEAR,))

    def shard_units(self) -> list[nn.Module]:
        """Modules sharded one by one (their parameters are gathered together)."""
        return self.blocks() or [self.module]

    def checkpoint_units(self) -> list[nn.Module]:
        """Modules whose activations are recomputed in backward when activation checkpointing is on."""
        return self.blocks()

    def enable_activation_checkpointing(self) -> None:
        """Non-reentrant checkpointing of each :meth:`checkpoint_units` module (active in training with grad)."""
        for unit in self.checkpoint_units():
            checkpoint_activations(unit)


class TimmTowerComponent(ModuleComponent):
    """A vision tower built on a timm model: the model itself, or a module that holds it as ``model``.

    Its blocks are timm's ``blocks`` (ViTs) or, without them, its ``stages``. The tower reads the output of block
    ``feature_layer`` (an attribute of the tower; without it every block runs): the blocks after it and the model's
    final norm / pooling / head never run. Its blocks are its sharding units; activation checkpointing wraps each of
    timm's ``blocks``, or, for a model without them, uses timm's own ``set_grad_checkpointing``.
    """

    @property
    def timm_model(self) -> nn.Module:
        """The timm model (the module's ``model``, else the module)."""
        return getattr(self.module, "model", self.module)

    def blocks(self) -> list[nn.Module]:
        model = self.timm_model
        return repeated_modules(getattr(model, "blocks", None)) or repeated_modules(getattr(model, "stages", None))

    def block_index(self) -> int | None:
        """Absolute index of the block whose output the tower reads (None: no blocks or no ``feature_layer``)."""
        depth = len(self.blocks())
        feature_layer = getattr(self.module, "feature_layer", None)
        return feature_layer % depth if depth and feature_layer is not None else None

    def unused_parameter_names(self) -> list[str]:
        """The parameters of the blocks after the one read, and of the final norm, pooling and head.

        They are kept so that released checkpoints load unchanged and parameter counts match them, but they receive
        no gradient.
        """
        index = self.block_index()
        if index is None:
            return []
        model = self.timm_model
        prefix = "" if model is self.module else next(n for n, m in self.module.named_children() if m is model) + "."
        after = {id(p) for block in self.blocks()[index + 1 :] for p in block.parameters()}
        # a tower that reads its features through the final norm (``feature_norm``) runs that norm
        tail = tuple(t for t in _TIMM_TAIL if not (t == "norm." and getattr(self.module, "feature_norm", False)))
        return [
            name
            for name, p in self.module.named_parameters()
            if id(p) in after or name.removeprefix(prefix).startswith(tail)
        ]

    def shard_units(self) -> list[nn.Module]:
        return self.blocks()  # a model without blocks stays in the root unit

    def checkpoint_units(self) -> list[nn.Module]:
        return repeated_modules(getattr(self.timm_model, "blocks", None))

    def enable_activation_checkpointing(self) -> None:
        model = self.timm_model
        if self.checkpoint_units():
            super().enable_activation_checkpointing()
        elif hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(True)  # timm's own (non-reentrant unless TIMM_REENTRANT_CKPT is set)


class LanguageModelComponent(ModuleComponent):
    """A transformers causal LM: its decoder layers are its blocks, sharding units and checkpointing units.

    The decoder layers are the decoder's ``layers``, else the modules of the model's ``_no_split_modules`` classes.
    Activation checkpointing uses transformers' own (non-reentrant), which also turns the KV cache off in training.
    """

    def blocks(self) -> list[nn.Module]:
        layers = repeated_modules(getattr(decoder_of(self.module), "layers", None))
        if layers:
            return layers
        names = set(getattr(self.module, "_no_split_modules", None) or [])
        return [m for m in self.module.modules() if type(m).__name__ in names]

    def shard_units(self) -> list[nn.Module]:
        """The decoder layers (``lm_head`` and the embeddings stay in the root: tied weights share a unit).

        Raises:
            ValueError: if the LLM has no decoder layers that can be found (nothing to shard layer by layer).
        """
        layers = self.blocks()
        if not layers:
            raise ValueError(
                f"No decoder layers found in the LLM ({type(self.module).__name__}): neither `model.layers` nor its "
                "`_no_split_modules` classes; it cannot be sharded layer by layer."
            )
        return layers

    def enable_activation_checkpointing(self) -> None:
        kwargs = {"use_reentrant": False}
        if hasattr(self.module, "activation_checkpointing_enable"):  # transformers >= 5
            self.module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(self.module, "gradient_checkpointing_enable"):
            self.module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            super().enable_activation_checkpointing()


def as_component(module: nn.Module, name: str | None = None) -> Component:
    """The interface of a component's module (see the module docstring for the order of the rules).

    Args:
        module: ``network.vision``, ``network.projector``, ``network.llm`` or any module standing for one.
        name: The component name; None: decided from the module alone (its ``component_interface``, a transformers
            model, else the defaults).
    """
    own = getattr(type(module), "component_interface", None)
    if callable(own):
        return module.component_interface()
    if name == "llm" or isinstance(module, PreTrainedModel):
        return LanguageModelComponent(module, name or "llm")
    if name == "vision":
        return TimmTowerComponent(module, name)
    return ModuleComponent(module, name)
