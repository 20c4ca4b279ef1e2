"""Scale-out: FSDP2 sharding in ``configure_model``, the project's strategy and its checks.

* FSDP2 (``ModelParallelStrategy`` / :class:`VLMModelParallelStrategy`): ``MultimodalModule.configure_model`` shards
  each vision block, the projector and each LLM decoder layer with ``fully_shard``, then the network as root.
* DDP: Lightning's ``DDPStrategy`` as it is (``find_unused_parameters`` stays off).
* FSDP1 (``FSDPStrategy``, the former ``VLMFSDPStrategy``) is not supported: a clear error names FSDP2.

Every strategy relies on two things the module and the network do for it: the token-exact loss normalisation
(``MultimodalModule.on_before_optimizer_step`` sums the supervised targets over all ranks), and the same collectives on
every rank whatever its batch holds: a batch without images still runs the vision tower and projector on one zero image
whose output is added with weight 0 (``VisionLanguageModel.embed``), so the FSDP all-gathers of the vision units and
DDP's gradient reduction of the projector happen on every rank, in the same order, when some ranks (or all) train on
text-only batches (LLaVA's instruction mix has such samples, and modality grouping puts them in batches of their own).
"""

from lightning_mm.distributed.checkpoint import PlacementAwareLoading, check_placements, consolidate_checkpoint
from lightning_mm.distributed.fsdp1 import VLMFSDPStrategy
from lightning_mm.distributed.fsdp2 import (
    fsdp_owner,
    fully_shard_network,
    is_fully_sharded,
    mixed_precision_dtypes,
    unsharded,
)
from lightning_mm.distributed.model_parallel import VLMModelParallelStrategy
from lightning_mm.distributed.setup import check_strategy, evaluate_without_inference_mode, shard_for_strategy
from lightning_mm.distributed.units import decoder_layers, shard_units, vision_blocks

__all__ = [
    "PlacementAwareLoading",
    "VLMFSDPStrategy",
    "VLMModelParallelStrategy",
    "check_placements",
    "check_strategy",
    "consolidate_checkpoint",
    "decoder_layers",
    "evaluate_without_inference_mode",
    "fsdp_owner",
    "fully_shard_network",
    "is_fully_sharded",
    "mixed_precision_dtypes",
    "shard_for_strategy",
    "shard_units",
    "unsharded",
    "vision_blocks",
]
