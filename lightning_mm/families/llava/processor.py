"""transformers image processor and processor that reproduce our image pipeline (the tower's timm data config + aspect
mode, :class:`~lightning_mm.data.ImageProcessor`).

``crop`` (resize the short side to ``floor(size / crop_pct)``, centre crop), ``resize`` (squash to the input size) and
``pad`` (pad to a square with LLaVA's ``int(255 * mean)`` colour, then resize) are written as ``CLIPImageProcessor`` /
``LlavaImageProcessor`` settings. With transformers' PIL backend (``AutoProcessor.from_pretrained(out,
backend="pil")``) the pixels are exactly ours, odd crop and pad margins included; its default torchvision backend
resamples bicubic slightly differently (a few pixels off by 1-2 uint8 levels).
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPImageProcessor, LlavaImageProcessor, LlavaProcessor, PreTrainedTokenizerBase

from lightning_mm.data.images import crop_resize_size, resample_filter

__all__ = ["hf_image_processor", "hf_processor"]


def hf_image_processor(data_config: dict[str, Any], aspect: str = "crop") -> CLIPImageProcessor:
    """An image processor giving the pixel values of :class:`~lightning_mm.data.ImageProcessor` (normalised).

    Args:
        data_config: timm data config of the tower (``input_size``, ``mean``, ``std``, ``interpolation``,
            ``crop_pct``, ``crop_mode``).
        aspect: Our aspect mode (``crop``, ``resize`` or ``pad``).

    Raises:
        ValueError: for ``crop`` or ``pad`` with a non-square input (transformers crops and pads to squares here).
    """
    _, height, width = data_config["input_size"]
    common = {
        "do_resize": True,
        "resample": resample_filter(data_config.get("interpolation", "bicubic")),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(m) for m in data_config["mean"]],
        "image_std": [float(s) for s in data_config["std"]],
        "do_convert_rgb": True,
    }
    if aspect in ("crop", "pad") and height != width:
        raise ValueError(f"aspect={aspect!r} is reproduced for square inputs only, got {height}x{width}.")
    if aspect == "crop":
        scale, _ = crop_resize_size(data_config)
        squash = (data_config.get("crop_mode") or "center") == "squash"
        size = {"height": scale, "width": scale} if squash else {"shortest_edge": scale}
        return CLIPImageProcessor(
            size=size, do_center_crop=True, crop_size={"height": height, "width": width}, **common
        )
    if aspect == "resize":
        return CLIPImageProcessor(size={"height": height, "width": width}, do_center_crop=False, **common)
    if aspect == "pad":  # pads to a square with int(255 * mean), image centred (offsets rounded down), then resizes
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
