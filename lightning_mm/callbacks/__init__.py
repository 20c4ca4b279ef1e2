"""Lightning callbacks: per-component placement (frozen / full / LoRA), adapter-only checkpoints, data statistics,
prediction files."""

from lightning_mm.callbacks.checkpointing import AdapterOnlyCheckpoint
from lightning_mm.callbacks.component import ComponentPlacement, FreezeComponent, FullComponent, LoRAComponent
from lightning_mm.callbacks.data_stats import DataStatsCallback
from lightning_mm.callbacks.placement import Placement
from lightning_mm.callbacks.prediction_writer import PredictionWriter

__all__ = [
    "AdapterOnlyCheckpoint",
    "ComponentPlacement",
    "DataStatsCallback",
    "FreezeComponent",
    "FullComponent",
    "LoRAComponent",
    "Placement",
    "PredictionWriter",
]
