"""Placement callbacks: declare, per component, whether it is frozen, fully fine-tuned or trained with LoRA.

One callback per component, listed under ``trainer.callbacks`` in a recipe::

    trainer:
      callbacks:
        - class_path: lightning_mm.callbacks.LoRAComponent
          init_args: {component: vision, r: 8, alpha: 16}
        - class_path: lightning_mm.callbacks.FullComponent
          init_args: {component: projector, lr: 2.0e-4}
        - class_path: lightning_mm.callbacks.LoRAComponent
          init_args: {component: llm, r: 16, alpha: 32, target_modules: [q_proj, v_proj]}

A component without a callback keeps what the model built (every component trains by default). The callbacks only
declare: the module applies the placements in ``configure_model``, before any strategy wraps the model (or at once
when the network already exists), and stores them in its checkpoints.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightning_mm.models.component import ComponentName, check_component
from lightning_mm.placement import Placement
from lightning_mm.placement.quantize import check_quantize

__all__ = ["ComponentPlacement", "FreezeComponent", "FullComponent", "LoRAComponent"]

Mode = Literal["frozen", "full", "lora"]
Quantize = Literal["nf4", "fp4", "int8"]
StorageDtype = Literal["float32", "bfloat16", "float16"]


class ComponentPlacement(Callback):
    """Declare how one component of a :class:`~lightning_mm.MultimodalModule` trains.

    Args:
        component: ``vision`` (the timm tower), ``projector`` or ``llm``.
        mode: ``frozen``: nothing trains; ``full``: every parameter that takes part in ``forward`` trains (a vision
            tower's blocks after its feature layer never run and stay frozen); ``lora``: the base is frozen and peft
            LoRA adapters train.
        r: LoRA rank.
        alpha: LoRA alpha (the update is scaled by ``alpha / r``).
        dropout: Dropout on the LoRA branch input (fused into ``lora_A``: backward keeps a 1-byte mask).
        target_modules: LoRA targets, matched against module paths inside this component only: a name or dotted
            suffix (``qkv``, ``attn.proj``) or ``all-linear`` selects linear layers; ``re:<regex>`` on the whole path
            selects any layer type peft supports. Default: timm ViT ``qkv``, ``proj``, ``fc1``, ``fc2`` for the
            vision tower; every linear layer of the projector; every linear layer of the LLM but its output
            projection (the attention and MLP projections).
        lr: Learning rate of this component's parameter groups (default: the optimiser's ``lr``).
        quantize: ``nf4``, ``fp4`` or ``int8``: store the frozen linear layers quantised by bitsandbytes (QLoRA with
            mode ``lora``; vision and llm only, never ``full``; ``pip install "lightning_mm[quant]"``).
        double_quant: 4-bit only: quantise the per-block scales too.
        storage_dtype: ``float32``, ``bfloat16`` or ``float16`` for the frozen parameters (default: the trainer's
            compute dtype, bfloat16 under ``bf16-mixed``).
    """

    def __init__(
        self,
        component: ComponentName,
        mode: Mode,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        target_modules: list[str] | None = None,
        lr: float | None = None,
        quantize: Quantize | None = None,
        double_quant: bool = False,
        storage_dtype: StorageDtype | None = None,
    ) -> None:
        check_component(component)
        check_quantize(component, mode, quantize)  # a fully trained or projector quantisation: refused here
        self.component = component
        self.placement = Placement(
            mode=mode,
            r=r,
            alpha=alpha,
            dropout=dropout,
            target_modules=None if target_modules is None else tuple(target_modules),
            lr=lr,
            quantize=quantize,
            double_quant=double_quant,
            storage_dtype=storage_dtype,
        )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(component=self.component)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(component={self.component!r}, {self.placement.describe()})"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        twins = [
            cb
            for cb in trainer.callbacks
            if isinstance(cb, ComponentPlacement) and cb is not self and cb.component == self.component
        ]
        if twins:
            raise ValueError(f"More than one placement callback for the {self.component}: {[self, *twins]}.")
        set_placement = getattr(pl_module, "set_placement", None)
        if set_placement is None:
            raise TypeError(f"{type(self).__name__} needs a MultimodalModule, got {type(pl_module).__name__}.")
        set_placement(self.component, self.placement)


class FreezeComponent(ComponentPlacement):
    """Freeze one component: none of its parameters train.

    Args:
        component: ``vision``, ``projector`` or ``llm``.
        quantize: ``nf4``, ``fp4`` or ``int8``: store its linear layers quantised by bitsandbytes (vision and llm).
        double_quant: 4-bit only: quantise the per-block scales too.
        storage_dtype: ``float32``, ``bfloat16`` or ``float16`` (default: the trainer's compute dtype).
    """

    def __init__(
        self,
        component: ComponentName,
        quantize: Quantize | None = None,
        double_quant: bool = False,
        storage_dtype: StorageDtype | None = None,
    ) -> None:
        super().__init__(component, "frozen", quantize=quantize, double_quant=double_quant, storage_dtype=storage_dtype)


class FullComponent(ComponentPlacement):
    """Fully fine-tune one component.

    Args:
        component: ``vision``, ``projector`` or ``llm``.
        lr: Learning rate of this component (default: the optimiser's ``lr``); LLaVA trains its projector at its own.
    """

    def __init__(self, component: ComponentName, lr: float | None = None) -> None:
        super().__init__(component, "full", lr=lr)


class LoRAComponent(ComponentPlacement):
    """Train one component with peft LoRA adapters; its base weights stay frozen.

    Args:
        component: ``vision``, ``projector`` or ``llm``.
        r: LoRA rank.
        alpha: LoRA alpha (the update is scaled by ``alpha / r``).
        dropout: Dropout on the LoRA branch input (fused into ``lora_A``: backward keeps a 1-byte mask).
        target_modules: Targets inside this component only: a name or dotted suffix (``qkv``, ``attn.proj``) or
            ``all-linear`` selects linear layers; ``re:<regex>`` on the whole path selects any layer peft supports.
            Default: ``qkv``, ``proj``, ``fc1``, ``fc2`` in a timm ViT; every linear layer of the projector; the
            attention and MLP projections of the LLM (every linear layer but its output projection).
        lr: Learning rate of this component's adapters (default: the optimiser's ``lr``).
        quantize: ``nf4``, ``fp4`` or ``int8``: QLoRA, the frozen base's linear layers stored by bitsandbytes in 4 or
            8 bits (vision and llm; ``pip install "lightning_mm[quant]"``).
        double_quant: 4-bit only: quantise the per-block scales too (QLoRA's double quantisation).
        storage_dtype: ``float32``, ``bfloat16`` or ``float16`` for the frozen base (default: the trainer's compute
            dtype, bfloat16 under ``bf16-mixed``); the adapters keep float32 master weights.
    """

    def __init__(
        self,
        component: ComponentName,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        target_modules: list[str] | None = None,
        lr: float | None = None,
        quantize: Quantize | None = None,
        double_quant: bool = False,
        storage_dtype: StorageDtype | None = None,
    ) -> None:
        super().__init__(
            component,
            "lora",
            r=r,
            alpha=alpha,
            dropout=dropout,
            target_modules=target_modules,
            lr=lr,
            quantize=quantize,
            double_quant=double_quant,
            storage_dtype=storage_dtype,
        )
