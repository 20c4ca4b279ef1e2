"""transformers image processor and processor that reproduce our image pipeline (timm's eval transform + aspect mode).

``crop`` (resize the short side to ``floor(size / crop_pct)``, centre crop) and ``resize`` (squash to the input size)
are written as ``CLIPImageProcessor`` settings. With transformers' PIL backend
(``AutoProcessor.from_pretrained(out, backend="pil")``) the pixels are exactly ours (timm resizes PIL images too); its
default torchvision backend resamples bicubic slightly differently (a few pixels off by 1-2 uint8 levels). ``pad`` is
not reproduced:
our pipeline resizes the long side and then pads with the mean colour (timm's ``border`` mode), transformers'
``LlavaImageProcessor(do_pad=True)`` pads to a square first and resizes after, so edge pixels differ slightly.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from PIL import Image
from transformers import CLIPImageProcessor, LlavaImageProcessor, LlavaProcessor, PreTrainedTokenizerBase

__all__ = ["hf_image_processor", "hf_processor"]

log = logging.getLogger(__name__)


def hf_image_processor(data_config: dict[str, Any], aspect: str = "crop") -> CLIPImageProcessor:
    """An image processor giving the pixel values of :class:`~lightning_mm.data.ImageProcessor` (normalised).

    Args:
        data_config: timm data config of the tower (``input_size``, ``mean``, ``std``, ``interpolation``,
            ``crop_pct``).
        aspect: Our aspect mode (``crop``, ``resize``, or ``pad``, which is approximated).
    """
    _, height, width = data_config["input_size"]
    interpolation = data_config.get("interpolation", "bicubic")
    if interpolation.upper() not in Image.Resampling.__members__:
        raise ValueError(f"Interpolation {interpolation!r} has no PIL equivalent for transformers' image processor.")
    common = {
        "do_resize": True,
        "resample": Image.Resampling[interpolation.upper()],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(m) for m in data_config["mean"]],
        "image_std": [float(s) for s in data_config["std"]],
        "do_convert_rgb": True,
    }
    if aspect == "crop":
        if height != width:
            raise ValueError(f"aspect='crop' is reproduced for square inputs only, got {height}x{width}.")
        scale = math.floor(height / float(data_config.get("crop_pct") or 1.0))
        return CLIPImageProcessor(
            size={"shortest_edge": scale}, do_center_crop=True, crop_size={"height": height, "width": width}, **common
        )
    if aspect == "resize":
        return CLIPImageProcessor(size={"height": height, "width": width}, do_center_crop=False, **common)
    if aspect == "pad":
        log.warning(
            "aspect='pad' is approximated by LlavaImageProcessor(do_pad=True): it pads before resizing, our pipeline "
            "after, so pixels near the padded edges differ slightly."
        )
        return LlavaImageProcessor(size={"height": height, "width": width}, do_pad=True, do_center_crop=False, **common)
    raise ValueError(f"Unknown aspect mode {aspect!r}; one of crop, resize, pad.")


def hf_processor(
    tokenizer: PreTrainedTokenizerBase,
    image_processor: CLIPImageProcessor,
    patch_size: int,
    select_strategy: str,
    num_prefix_tokens: int,
    image_token: str = "<image>",
) -> LlavaProcessor:
    """transformers' ``LlavaProcessor``: expands each image token to the tower's token count, as our data does."""
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=select_strategy,
        chat_template=getattr(tokenizer, "chat_template", None),
        image_token=image_token,
        num_additional_image_tokens=num_prefix_tokens,
    )
