"""The sharding units of a VisionLanguageModel: each vision block, the projector, each LLM decoder layer.

FSDP2 (``fully_shard`` in ``configure_model``) and FSDP1 (the auto-wrap policy) shard the same units, so both group
parameters the same way: one all-gather / reduce-scatter per unit, and everything else (embeddings, ``lm_head``, final
norms, the tower's patch embedding) in the root unit. ``lm_head`` stays in the root on purpose: the loss reads its
weight outside any module ``forward``, and tied input / output embeddings must share a unit.
"""

from __future__ import annotations

from torch import nn

from lightning_mm.models.language import decoder_of

__all__ = ["decoder_layers", "shard_units", "vision_blocks"]


def _repeated(container: object) -> list[nn.Module]:
    if isinstance(container, nn.ModuleList | nn.Sequential) and len(container):
        return list(container)
    return []


def vision_blocks(vision: nn.Module) -> list[nn.Module]:
    """The transformer blocks (timm ``blocks``) or stages (``stages``) of a vision tower, in order.

    Args:
        vision: A :class:`~lightning_mm.models.VisionTower` (or a bare timm model).

    Returns:
        The block modules; empty when the backbone has neither ``blocks`` nor ``stages``.
    """
    model = getattr(vision, "model", vision)
    return _repeated(getattr(model, "blocks", None)) or _repeated(getattr(model, "stages", None))


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The decoder layers of a transformers causal LM (``model.layers``, else its ``_no_split_modules`` classes)."""
    layers = _repeated(getattr(decoder_of(llm), "layers", None))
    if layers:
        return layers
    names = set(getattr(llm, "_no_split_modules", None) or [])
    return [m for m in llm.modules() if type(m).__name__ in names]


def shard_units(network: nn.Module) -> dict[str, nn.Module]:
    """Name (relative to ``network``) -> module of every sharding unit, in forward order.

    The units are the vision tower's blocks (all of them: blocks after the feature layer never run, but sharding them
    keeps their memory spread), the projector and the LLM's decoder layers. Parameters outside every unit belong to
    the root unit.

    Args:
        network: A :class:`~lightning_mm.models.VisionLanguageModel` (``vision``, ``projector``, ``llm``).

    Raises:
        ValueError: if the LLM has no decoder layers that can be found (nothing to shard layer by layer).
    """
    layers = decoder_layers(network.llm)
    if not layers:
        raise ValueError(
            f"No decoder layers found in the LLM ({type(network.llm).__name__}): neither `model.layers` nor its "
            "`_no_split_modules` classes; it cannot be sharded layer by layer."
        )
    wanted = {id(m) for m in [*vision_blocks(network.vision), network.projector, *layers]}
    return {name: m for name, m in network.named_modules() if id(m) in wanted}
