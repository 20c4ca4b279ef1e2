"""What every converter reads from a transformers VLM config: the LM's architecture entries, the image processor's
mean / std / resampling as timm settings, and the chat template an exported model records."""

from __future__ import annotations

from typing import Any

from PIL import Image
from transformers import PretrainedConfig

__all__ = ["TEMPLATE_KEY", "image_overlay", "text_model_config"]

TEMPLATE_KEY = "lightning_mm_template"  # config.json key: the chat template an exported model was trained with
_NOT_ARCHITECTURE = ("architectures", "_name_or_path", "transformers_version", "dtype", "torch_dtype")
_TIMM_RESAMPLING = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")  # PIL's modes timm resizes with


def image_overlay(preprocessor: dict[str, Any] | None) -> dict[str, Any]:
    """timm ``pretrained_cfg`` entries (mean, std, crop, interpolation) read from a ``preprocessor_config.json``."""
    if not preprocessor:
        return {}
    out: dict[str, Any] = {}
    if preprocessor.get("image_mean") is not None:
        out["mean"] = tuple(float(m) for m in preprocessor["image_mean"])
    if preprocessor.get("image_std") is not None:
        out["std"] = tuple(float(s) for s in preprocessor["image_std"])
    if preprocessor.get("resample") is not None:
        mode = Image.Resampling(preprocessor["resample"]).name.lower()  # PIL's code, e.g. 3 -> bicubic
        if mode not in _TIMM_RESAMPLING:
            raise ValueError(f"image processor resample={preprocessor['resample']} ({mode}) has no timm equivalent.")
        out["interpolation"] = mode
    size, crop = preprocessor.get("size") or {}, preprocessor.get("crop_size") or {}
    if preprocessor.get("do_center_crop") and "shortest_edge" in size and crop.get("height"):
        out["crop_pct"] = crop["height"] / size["shortest_edge"]
        out["crop_mode"] = "center"
    else:
        out["crop_pct"] = 1.0
    return out


def text_model_config(config: PretrainedConfig) -> dict[str, Any]:
    """The architecture entries of a VLM config's ``text_config``, as our LLM config dict.

    transformers ties ``lm_head`` to the input embeddings when the VLM config or its text config says so.
    """
    text = config.text_config
    llm_config = {k: v for k, v in text.to_diff_dict().items() if k not in _NOT_ARCHITECTURE}
    tied = bool(getattr(config, "tie_word_embeddings", False) or getattr(text, "tie_word_embeddings", False))
    llm_config.update(model_type=text.model_type, vocab_size=int(text.vocab_size), tie_word_embeddings=tied)
    return llm_config
