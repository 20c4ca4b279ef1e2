"""Lightning callbacks: per-component placement (frozen / full / LoRA), adapter-only checkpoints, best-k and last
checkpoints, data statistics, throughput in tokens, held-out samples with generated answers in TensorBoard,
prediction files, training faults (non-finite losses, SIGTERM / SIGINT), progress as plain lines."""

from lightning_mm.callbacks.checkpointing import AdapterOnlyCheckpoint
from lightning_mm.callbacks.component import ComponentPlacement, FreezeComponent, FullComponent, LoRAComponent
from lightning_mm.callbacks.data_stats import DataStatsCallback
from lightning_mm.callbacks.faults import NonFiniteError, TrainingFaults
from lightning_mm.callbacks.last_checkpoint import BestAndLastCheckpoint
from lightning_mm.callbacks.prediction_writer import PredictionWriter
from lightning_mm.callbacks.progress import ProgressLines
from lightning_mm.callbacks.throughput import SupervisedTokenThroughput
from lightning_mm.callbacks.validation_samples import ValidationSamples
from lightning_mm.placement import Placement

__all__ = [
    "AdapterOnlyCheckpoint",
    "BestAndLastCheckpoint",
    "ComponentPlacement",
    "DataStatsCallback",
    "FreezeComponent",
    "FullComponent",
    "LoRAComponent",
    "NonFiniteError",
    "Placement",
    "PredictionWriter",
    "ProgressLines",
    "SupervisedTokenThroughput",
    "TrainingFaults",
    "ValidationSamples",
]
