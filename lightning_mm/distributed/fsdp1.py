"""FSDP1 (Lightning's ``FSDPStrategy``) is not supported: FSDP2 (:class:`VLMModelParallelStrategy`) replaces it.

:class:`VLMFSDPStrategy` stays for one release so that a recipe naming it fails at once with the replacement.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy

from lightning_mm.errors import ConfigError

__all__ = ["FSDP1_REMOVED", "VLMFSDPStrategy"]


FSDP1_REMOVED = (
    "FSDP1 (FSDPStrategy / lightning_mm.distributed.VLMFSDPStrategy) is no longer supported: use FSDP2, "
    "`strategy: {class_path: lightning_mm.distributed.VLMModelParallelStrategy}` (shards the same units, resumes "
    "adapter-only checkpoints; `save_distributed_checkpoint: false` writes one file like `state_dict_type: full`)."
)


class VLMFSDPStrategy(FSDPStrategy):
    """Removed: FSDP1 is replaced by :class:`~lightning_mm.distributed.VLMModelParallelStrategy` (FSDP2).

    Raises:
        ConfigError: always, naming the replacement.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigError(FSDP1_REMOVED)
