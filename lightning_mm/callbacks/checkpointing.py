"""Adapter-only checkpoints: the trained weights and the placement, without the frozen base.

The checkpoint format (key, fingerprints, adapter-only state dict) is :mod:`lightning_mm.checkpoint.format`; what the
module writes and reads in its checkpoint hooks is :mod:`lightning_mm.checkpoint.state`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightning_mm.checkpoint.format import make_adapter_only

__all__ = ["AdapterOnlyCheckpoint"]


class AdapterOnlyCheckpoint(Callback):
    """Write adapter-only checkpoints: the trained weights and the placement, without the frozen base.

    Every checkpoint the trainer writes while this callback is attached (``ModelCheckpoint``,
    ``trainer.save_checkpoint``, also after ``fit``) keeps the parameters that train (LoRA matrices, fully trained
    components), buffers, optimiser and loop state, and drops the frozen parameters; weights-only checkpoints
    (``save_weights_only``) skip the callbacks and hold every weight. Loading one
    (``MultimodalModule.load_from_checkpoint`` or ``fit(ckpt_path=...)``) builds the base as the model's config says
    (pretrained weights, or a random init under the same seed), injects the adapters, and fills the frozen weights
    from that fresh base; a warning names the components whose base differs from the one the adapters were trained on.
    The module itself is left as it is: another trainer without this callback writes whole checkpoints.

    Strategies see it through ``trainer.callbacks`` (its ``adapter_only`` attribute):
    :func:`~lightning_mm.distributed.check_strategy` refuses a sharding strategy that could not resume such checkpoints.
    """

    adapter_only = True  # what strategy checks look for among the trainer's callbacks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "set_placement"):
            raise TypeError(f"{type(self).__name__} needs a MultimodalModule, got {type(pl_module).__name__}.")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        make_adapter_only(pl_module, checkpoint)
