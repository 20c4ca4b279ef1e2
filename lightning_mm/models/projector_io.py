"""Projector weight files: LLaVA's stage-1 ``mm_projector.bin`` and this project's checkpoints.

LLaVA's pretraining stage saves only the projector, with keys ``model.mm_projector.0.weight``, ``.0.bias``,
``.2.weight``, ``.2.bias`` (``mlp2x_gelu``: Linear, GELU, Linear). Its finetune script starts from such a file
(``--pretrain_mm_mlp_adapter``); :func:`load_projector_weights` does the same for this project's projectors, whose
``nn.Sequential`` layout is LLaVA's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["load_projector_weights", "projector_state_dict", "save_projector_weights"]

# Key prefixes that end right before the projector's own keys: LLaVA's files, then this project's module state.
_PREFIX_KEYWORDS = ("mm_projector.", "network.projector.")
_BARE_KEY = re.compile(r"\d+\.[A-Za-z_]\w*")


def projector_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The projector's own state dict (keys like ``0.weight``) from the contents of a weight file.

    Args:
        state: One of: LLaVA's ``mm_projector.bin`` (``model.mm_projector.0.weight``; whatever precedes
            ``mm_projector.`` is ignored, as LLaVA's loader does); a Lightning checkpoint of a
            :class:`~lightning_mm.MultimodalModule` (``{"state_dict": {"network.projector.0.weight": ...}}``); or a
            bare projector state dict (``0.weight``).

    Returns:
        ``{"0.weight": tensor, ...}``.

    Raises:
        ValueError: if no projector weights are found.
    """
    if isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    for keyword in _PREFIX_KEYWORDS:
        found = {k.split(keyword, 1)[1]: v for k, v in state.items() if keyword in k}
        if found:
            return found
    if state and all(_BARE_KEY.fullmatch(k) for k in state):
        return dict(state)
    sample = ", ".join(list(state)[:5])
    raise ValueError(f"No projector weights found (keys containing 'mm_projector.' or 'network.projector.'): {sample}")


def load_projector_weights(projector: nn.Module, source: str | os.PathLike | Mapping[str, Any]) -> None:
    """Load a projector weight file (or its loaded contents) into ``projector``, casting to its dtype.

    Args:
        projector: A projector from :func:`~lightning_mm.models.build_projector` of the same type and widths.
        source: Path of ``mm_projector.bin`` / a ``.ckpt`` / a ``torch.save``'d state dict, or such a mapping.

    Raises:
        ValueError: on missing, unexpected or differently shaped weights (e.g. a 13B projector into a 7B model).
    """
    where = str(source) if not isinstance(source, Mapping) else "the given state dict"
    if not isinstance(source, Mapping):
        source = torch.load(source, map_location="cpu", weights_only=True)
    weights = projector_state_dict(source)
    own = projector.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(f"Projector weights in {where} do not fit: missing {missing}, unexpected {unexpected}.")
    for key, value in weights.items():
        if value.shape != own[key].shape:
            raise ValueError(
                f"Projector weight {key!r} in {where} has shape {tuple(value.shape)}, the projector "
                f"{tuple(own[key].shape)}: the file was trained for other vision/LM widths."
            )
    projector.load_state_dict(weights)


def save_projector_weights(projector: nn.Module, path: str | os.PathLike) -> None:
    """Write ``projector``'s weights in LLaVA's ``mm_projector.bin`` layout (``model.mm_projector.0.weight``)."""
    state = {f"model.mm_projector.{k}": v.detach().cpu() for k, v in projector.state_dict().items()}
    torch.save(state, path)
