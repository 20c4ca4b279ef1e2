"""Image-splitting settings of the SmolVLM family: the released checkpoints' image processor, written down, and the
layout of a spec (from those settings, or read from its checkpoint's processor files)."""

from __future__ import annotations

from typing import Any

from lightning_mm.families.smolvlm.layout import SmolVLMLayout
from lightning_mm.interop.checkpoint import read_config

__all__ = ["RELEASED_CHECKPOINTS", "SMOLVLM_IMAGE_PROCESSOR", "layout_for_spec", "smolvlm_layout"]

#: Checkpoints whose image-processor settings are :data:`SMOLVLM_IMAGE_PROCESSOR` (read offline).
RELEASED_CHECKPOINTS = ("HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM-500M-Instruct")

# their preprocessor_config.json (Idefics3ImageProcessor): LANCZOS, mean = std = 0.5, longest edge 2048, 512 px tiles
SMOLVLM_IMAGE_PROCESSOR: dict[str, Any] = {
    "do_image_splitting": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "max_image_size": {"longest_edge": 512},
    "resample": 1,
    "size": {"longest_edge": 2048},
}


def smolvlm_layout(
    tokenizer: Any, preprocessor: dict[str, Any] = SMOLVLM_IMAGE_PROCESSOR, image_seq_len: int = 64
) -> SmolVLMLayout:
    """The image layout of an image processor's settings (default: the released SmolVLM-256M/500M's, 64 tokens/tile).

    Args:
        tokenizer: The model's tokenizer (with the marker tokens).
        preprocessor: ``preprocessor_config.json`` settings: ``max_image_size``, ``size``, ``do_image_splitting``.
        image_seq_len: Image tokens per tile.
    """
    size = preprocessor.get("size") or {}
    return SmolVLMLayout(
        tokenizer,
        image_seq_len=image_seq_len,
        tile_size=int(preprocessor["max_image_size"]["longest_edge"]),
        longest_edge=int(size["longest_edge"]) if preprocessor.get("do_resize", True) and size else None,
        split=bool(preprocessor.get("do_image_splitting", True)),
    )


def layout_for_spec(spec: Any, tokenizer: Any, per_tile: int) -> SmolVLMLayout:
    """The image layout of a SmolVLM-family spec: a zoo entry's written-down settings, else its checkpoint's.

    Args:
        spec: The spec.
        tokenizer: Its tokenizer (with the marker tokens).
        per_tile: Image tokens per tile (what the spec's tower and projector make of one tile).

    Raises:
        ValueError: for a spec without a checkpoint whose image-processor settings could be read.
    """
    if spec.checkpoint in RELEASED_CHECKPOINTS:
        return smolvlm_layout(tokenizer, SMOLVLM_IMAGE_PROCESSOR, per_tile)
    if spec.checkpoint is None:
        raise ValueError(f"Model {spec.name!r} names no checkpoint to read its image-processor settings from.")
    _, preprocessor = read_config(spec.checkpoint)
    if not preprocessor or "max_image_size" not in preprocessor:
        raise ValueError(f"{spec.checkpoint}: no SmolVLM image-processor settings (max_image_size) to split images by.")
    return smolvlm_layout(tokenizer, preprocessor, per_tile)
