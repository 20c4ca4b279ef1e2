"""The sharding units of a VisionLanguageModel: what each component's interface names as its units.

By default each vision block, the projector and each LLM decoder layer (:mod:`lightning_mm.models.component`).
FSDP2 (``fully_shard`` in ``configure_model``) and FSDP1 (the auto-wrap policy) shard the same units, so both group
parameters the same way: one all-gather / reduce-scatter per unit, and everything else (embeddings, ``lm_head``, final
norms, the tower's patch embedding) in the root unit. ``lm_head`` stays in the root on purpose: the loss reads its
weight outside any module ``forward``, and tied input / output embeddings must share a unit.
"""

from __future__ import annotations

from torch import nn

from lightning_mm.models.component import COMPONENTS, as_component

__all__ = ["decoder_layers", "shard_units", "vision_blocks"]


def vision_blocks(vision: nn.Module) -> list[nn.Module]:
    """The blocks of a vision tower, in order (its interface's ``blocks()``).

    Args:
        vision: A :class:`~lightning_mm.models.VisionTower` (or a bare timm model: its ``blocks``, else ``stages``).

    Returns:
        The block modules; empty when the backbone has neither ``blocks`` nor ``stages``.
    """
    return as_component(vision, "vision").blocks()


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The decoder layers of a transformers causal LM (``model.layers``, else its ``_no_split_modules`` classes)."""
    return as_component(llm, "llm").blocks()


def shard_units(network: nn.Module) -> dict[str, nn.Module]:
    """Name (relative to ``network``) -> module of every sharding unit, in forward order.

    The units are those of each component's interface (``shard_units()``): by default the vision tower's blocks (all
    of them: blocks after the feature layer never run, but sharding them keeps their memory spread), the projector
    and the LLM's decoder layers. Parameters outside every unit belong to the root unit.

    Args:
        network: A :class:`~lightning_mm.models.VisionLanguageModel` (``vision``, ``projector``, ``llm``).

    Raises:
        ValueError: if the LLM has no decoder layers that can be found (nothing to shard layer by layer).
    """
    wanted = {id(m) for name in COMPONENTS for m in as_component(getattr(network, name), name).shard_units()}
    return {name: m for name, m in network.named_modules() if id(m) in wanted}
