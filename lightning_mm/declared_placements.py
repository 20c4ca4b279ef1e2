"""What trains, declared on :class:`~lightning_mm.MultimodalModule`: one record, the ``placements`` hyperparameter.

``hparams["placements"]`` (component -> :meth:`Placement.to_dict` form) is the only record of the placements: the
placement callbacks write it through :meth:`DeclaredPlacements.set_placement`, checkpoints carry it with the other
hyperparameters, and ``configure_model`` applies it (:func:`apply_placements`) before any strategy shards the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_mm.checkpoint.format import PLACEMENTS_HPARAM
from lightning_mm.models.component import COMPONENTS, check_component
from lightning_mm.placement import Placement, apply_placements, format_placement_table, placement_rows
from lightning_mm.placement.quantize import llm_quantization, refuse_quantized_sharding
from lightning_mm.placement.storage_dtype import (
    apply_storage_dtype,
    check_storage_dtypes,
    component_storage_dtype,
    storage_dtype_for_precision,
)

__all__ = ["COMPONENTS", "DeclaredPlacements", "check_component"]


class DeclaredPlacements:
    """The placement half of :class:`~lightning_mm.MultimodalModule` (a LightningModule mixin).

    Uses the module's ``hparams``, ``network`` and ``component(name)``.
    """

    def declare_placements(self, placements: Mapping[str, Any] | None) -> None:
        """Start the record with ``placements`` (component -> :class:`Placement` or its dict form)."""
        self.hparams[PLACEMENTS_HPARAM] = {}
        for component, placement in (placements or {}).items():
            self.set_placement(
                component, placement if isinstance(placement, Placement) else Placement.from_dict(placement)
            )

    @property
    def placements(self) -> dict[str, Placement]:
        """Component -> declared :class:`~lightning_mm.callbacks.Placement` (read from ``hparams.placements``)."""
        return {c: Placement.from_dict(d) for c, d in self.hparams[PLACEMENTS_HPARAM].items()}

    def set_placement(self, component: str, placement: Placement) -> None:
        """Declare how ``component`` trains; applied at once if the network exists, else by ``configure_model``.

        Args:
            component: ``vision``, ``projector`` or ``llm``.
            placement: A :class:`~lightning_mm.callbacks.Placement` (frozen / full / LoRA, optional ``lr``).
        """
        check_component(component)
        declared: dict[str, Any] = self.hparams[PLACEMENTS_HPARAM]
        previous = declared.get(component)
        declared[component] = placement.to_dict()
        if self.network is None:
            return
        try:
            self.apply_placements()
        except Exception:
            if previous is None:
                del declared[component]
            else:
                declared[component] = previous
            raise

    def apply_placements(self) -> None:
        """Apply each declared placement to its component, idempotently (:func:`lightning_mm.placement.apply_placements`).

        Frozen parameters are stored in the trainer's compute dtype (bfloat16 under ``bf16-mixed``) unless a placement
        sets its own ``storage_dtype``; without a trainer they keep theirs.
        """
        apply_placements(self.network, self.placements, self.storage_dtype())

    def storage_dtype(self) -> Any:
        """Default frozen storage dtype: the trainer's compute dtype under mixed precision, else None (keep)."""
        return storage_dtype_for_precision(self._trainer.precision if self._trainer is not None else None)

    def llm_quantization(self) -> Any:
        """transformers' ``BitsAndBytesConfig`` for loading a pretrained LLM quantised (None: not quantised)."""
        return llm_quantization(self.placements.get("llm"), self.storage_dtype())

    def apply_storage(self, trainer: Any) -> None:
        """Before sharding, under a trainer: refuse what cannot work, then store frozen weights (idempotent).

        Refused: a half-precision ``storage_dtype`` without autocast, and quantised components under FSDP2 (a device
        mesh). Then each component's frozen parameters take its storage dtype (a network built before the trainer
        existed, e.g. by ``load_from_checkpoint``, follows the trainer's precision from here).
        """
        placements = self.placements
        check_storage_dtypes(placements, trainer.precision)
        if getattr(self, "device_mesh", None) is not None:
            quantized = {c: p.quantize for c, p in placements.items() if p.quantize is not None}
            refuse_quantized_sharding(quantized, type(trainer.strategy).__name__)
        default = self.storage_dtype()
        for component in COMPONENTS:
            dtype = component_storage_dtype(placements.get(component), default, component)
            apply_storage_dtype(self.component(component), dtype)

    def placement_table(self) -> list[dict[str, Any]]:
        """Per component: ``component``, ``mode``, ``trainable`` and ``total`` parameter counts, ``unused`` count."""
        return placement_rows({c: self.component(c) for c in COMPONENTS}, self.placements)

    def log_placements(self) -> None:
        """Print the placement table (component, mode, trainable / total params) and add it to TensorBoard."""
        rows = self.placement_table()
        rank_zero_info("Trainable parameters per component:\n" + format_placement_table(rows))
        if self._trainer is None or not self.trainer.is_global_zero:
            return
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                text = format_placement_table(rows, markdown=True)
                logger.experiment.add_text("placement", text, global_step=self.global_step)
