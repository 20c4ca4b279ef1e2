"""transformers' processors of an any-resolution network: ``LlavaNextProcessor`` / ``LlavaOnevisionProcessor``.

Their image processors cut tiles exactly as :class:`~lightning_mm.families.llava_next.layout.AnyResLayout` does (base view
resized to the tile, grid tiles from the image fitted into the best pinpoint on black) with the tower's mean, std and
resampling, and their token counts are :func:`~lightning_mm.families.llava_next.geometry.anyres_token_count`'s, so an exported
folder reads images as training did.
"""

from __future__ import annotations

from typing import Any

from PIL import Image
from torch import nn
from transformers import (
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    PreTrainedTokenizerBase,
    ProcessorMixin,
)

from lightning_mm.families.llava_next.projector import AnyResProjector

__all__ = ["anyres_hf_processor"]


def anyres_hf_processor(
    network: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    data_config: dict[str, Any],
    image_token: str = "<image>",
) -> ProcessorMixin:
    """The processor of ``network`` (whose projector is an :class:`AnyResProjector`).

    Args:
        network: The network (tower and tiling read from it).
        tokenizer: Its tokenizer (with its chat template).
        data_config: timm data config of the tower (mean, std, interpolation).
        image_token: Text of the image token.

    Returns:
        ``LlavaOnevisionProcessor`` when the tiling caps tokens (``anyres_max_<N>``), else ``LlavaNextProcessor``.
    """
    projector = network.projector
    if not isinstance(projector, AnyResProjector):
        raise ValueError("anyres_hf_processor needs a network with any-resolution tiling (AnyResProjector).")
    geometry = projector.geometry
    tile = geometry.tile_size
    interpolation = str(data_config.get("interpolation", "bicubic")).upper()
    if interpolation not in Image.Resampling.__members__:
        raise ValueError(f"Interpolation {interpolation.lower()!r} has no PIL equivalent for transformers.")
    common = {
        "image_grid_pinpoints": [list(p) for p in geometry.grid_pinpoints],
        "resample": Image.Resampling[interpolation],
        "image_mean": [float(m) for m in data_config["mean"]],
        "image_std": [float(s) for s in data_config["std"]],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    tower = network.vision
    strategy = "default" if tower.drop_prefix_tokens and tower.num_prefix_tokens == 1 else "full"
    chat_template = getattr(tokenizer, "chat_template", None)
    if geometry.max_tiles is None:
        images = LlavaNextImageProcessor(
            size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile}, do_center_crop=True, **common
        )
        return LlavaNextProcessor(
            image_processor=images,
            tokenizer=tokenizer,
            patch_size=tile // geometry.side,
            vision_feature_select_strategy=strategy,
            chat_template=chat_template,
            image_token=image_token,
            num_additional_image_tokens=tower.num_prefix_tokens,
        )
    images = LlavaOnevisionImageProcessor(size={"height": tile, "width": tile}, **common)
    return LlavaOnevisionProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=geometry.side**2 + (strategy == "default"),  # it counts the CLS token, then drops it
        vision_feature_select_strategy=strategy,
        chat_template=chat_template,
        image_token=image_token,
        vision_aspect_ratio=f"anyres_max_{geometry.max_tiles}",
    )
