"""Language model: a Hugging Face causal LM, built from a hub id / local path or from a config."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

__all__ = ["build_language_model", "decoder_of"]


def build_language_model(
    name_or_path: str | None = None,
    config: dict[str, Any] | None = None,
    pretrained: bool = False,
    torch_dtype: torch.dtype | None = None,
    attn_implementation: str = "sdpa",
    quantization_config: Any | None = None,
) -> PreTrainedModel:
    """Build a causal LM with transformers.

    Args:
        name_or_path: Hub id or local directory (``save_pretrained`` output).
        config: Architecture config (must hold ``model_type``); overrides fields of ``name_or_path``'s config, or
            defines the model alone when ``name_or_path`` is None.
        pretrained: Load the weights with ``from_pretrained(name_or_path)``; otherwise random init from the config.
        torch_dtype: Parameter dtype (default: float32).
        attn_implementation: transformers attention backend (``sdpa``, ``eager``, ``flash_attention_2``); ``sdpa``
            falls back to ``eager`` for a model that does not support it (attention logit soft-capping).
        quantization_config: With ``pretrained``: transformers' ``BitsAndBytesConfig``, the linear layers quantised
            while the weights load (:func:`lightning_mm.placement.quantize.bnb_config`); ignored for a random init
            (the placement quantises it layer by layer).

    Returns:
        An ``AutoModelForCausalLM`` instance.
    """
    overrides = dict(config or {})
    if attn_implementation == "sdpa" and not _supports_sdpa(name_or_path, overrides):
        attn_implementation = "eager"
    if pretrained:
        if name_or_path is None:
            raise ValueError("pretrained=True needs `name_or_path` (a hub id or a save_pretrained directory).")
        if quantization_config is not None:
            overrides["quantization_config"] = quantization_config
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype, attn_implementation=attn_implementation, **overrides
        )
    if name_or_path is not None:
        cfg = AutoConfig.from_pretrained(name_or_path, **overrides)
    else:
        model_type = overrides.pop("model_type", None)
        if model_type is None:
            raise ValueError("A language model config needs `model_type` (e.g. 'llama', 'qwen2') or a `name_or_path`.")
        cfg = AutoConfig.for_model(model_type, **overrides)
    cfg._attn_implementation = attn_implementation
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype)
    return model


def _supports_sdpa(name_or_path: str | None, overrides: dict[str, Any]) -> bool:
    """Whether transformers' causal-LM class of this config runs with ``sdpa``."""
    model_type = overrides.get("model_type")
    if model_type is not None:
        cfg = AutoConfig.for_model(model_type)
    elif name_or_path is not None:
        cfg = AutoConfig.from_pretrained(name_or_path)
    else:
        return True
    model_class = AutoModelForCausalLM._model_mapping.get(type(cfg), None)
    return bool(getattr(model_class, "_supports_sdpa", True))


def decoder_of(llm: PreTrainedModel) -> nn.Module:
    """The decoder stack of a causal LM (the part that returns hidden states, without ``lm_head``)."""
    return llm.get_decoder() if hasattr(llm, "get_decoder") else llm.base_model
