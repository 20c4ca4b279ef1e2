"""ModelSpec: everything needed to build a named vision-language model, and the builders that read it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lightning_mm.models import VisionLanguageModel, VisionTower, build_language_model, build_projector

__all__ = ["ModelSpec", "build_network", "count_image_tokens", "load_tokenizer"]

BUILTIN_TOKENIZERS = ("builtin:synthetic",)


@dataclass(frozen=True)
class ModelSpec:
    """A named model: vision tower, projector, LLM, tokenizer and chat format.

    Variants are made with :meth:`replace`, overriding only the fields that differ; dict fields (``vision_kwargs``,
    ``llm_config``) are merged key by key.

    Attributes:
        name: Registry name.
        vision_model: timm architecture, optionally with a pretrained tag (``vit_large_patch14_clip_336.openai``).
        vision_kwargs: Extra ``timm.create_model`` arguments (``img_size``, ``depth``, ...).
        feature_layer: Block of the tower whose output is used (LLaVA: -2).
        drop_prefix_tokens: Drop CLS/register tokens (LLaVA: patch tokens only).
        projector: Projector name (``linear``, ``mlp2x_gelu``, ...).
        llm: Hub id or local path of the causal LM (None: build from ``llm_config`` alone).
        llm_config: Architecture config (with ``model_type``) used to build offline, or overrides of ``llm``'s config.
            ``vocab_size`` left out means ``len(tokenizer)``.
        tokenizer: Hub id or path of the tokenizer (None: ``llm``), or ``builtin:synthetic``.
        template: Chat template name for the data (``chatml``, ``vicuna_v1``, ``plain``, ...).
        image_token: Text of the image placeholder token (added to the tokenizer when missing).
        description: One line for ``lightning-mm zoo``.
    """

    name: str
    vision_model: str
    projector: str = "mlp2x_gelu"
    llm: str | None = None
    llm_config: dict[str, Any] = field(default_factory=dict)
    vision_kwargs: dict[str, Any] = field(default_factory=dict)
    feature_layer: int = -2
    drop_prefix_tokens: bool = True
    tokenizer: str | None = None
    template: str = "chatml"
    image_token: str = "<image>"
    description: str = ""

    def replace(self, **overrides: Any) -> ModelSpec:
        """A copy with ``overrides`` applied (dict fields merged, others replaced)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"Unknown ModelSpec field(s) {sorted(unknown)}; known: {sorted(names)}")
        for key in ("vision_kwargs", "llm_config"):
            if key in overrides and overrides[key] is not None:
                overrides[key] = {**getattr(self, key), **overrides[key]}
        return dataclasses.replace(self, **overrides)


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The spec's tokenizer, with the image token registered as a special token.

    Args:
        spec: Model spec.

    Returns:
        A transformers tokenizer that maps ``spec.image_token`` to a single id.
    """
    source = spec.tokenizer or spec.llm
    if source == "builtin:synthetic":
        from lightning_mm.data.synthetic import build_synthetic_tokenizer

        tok = build_synthetic_tokenizer()
    elif source is None:
        raise ValueError(f"Model {spec.name!r} names neither a tokenizer nor an LLM to take one from.")
    else:
        tok = AutoTokenizer.from_pretrained(source)
    if spec.image_token not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [spec.image_token]}, replace_additional_special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def _vision_tower(spec: ModelSpec, pretrained: bool) -> VisionTower:
    return VisionTower(
        spec.vision_model,
        pretrained=pretrained,
        feature_layer=spec.feature_layer,
        drop_prefix_tokens=spec.drop_prefix_tokens,
        model_kwargs=spec.vision_kwargs,
    )


def count_image_tokens(spec: ModelSpec) -> tuple[int, dict[str, Any]]:
    """Tokens one image becomes after the tower and projector, read from a meta-device forward pass.

    Returns:
        (tokens per image, timm data config of the tower).
    """
    with torch.device("meta"):
        tower = _vision_tower(spec, pretrained=False)
        projector = build_projector(spec.projector, tower.hidden_size, tower.hidden_size)
        cfg = tower.data_config()
        x = torch.empty(1, *cfg["input_size"])  # (1, 3, H, W)
        tokens = projector(tower(x))  # (1, N, D)
    return int(tokens.shape[1]), cfg


def build_network(
    spec: ModelSpec,
    tokenizer: PreTrainedTokenizerBase,
    pretrained: bool = False,
    torch_dtype: torch.dtype | None = None,
) -> VisionLanguageModel:
    """Build the plain-torch network of ``spec``.

    Args:
        spec: Model spec.
        tokenizer: Its tokenizer (sets the LM's vocabulary size when the config leaves it out, and the image token id).
        pretrained: Load timm and transformers pretrained weights through their own loading paths.
        torch_dtype: Parameter dtype of the LLM.

    Returns:
        The :class:`~lightning_mm.models.VisionLanguageModel`.
    """
    vision = _vision_tower(spec, pretrained)
    llm_config = dict(spec.llm_config)
    if spec.llm is None and "vocab_size" not in llm_config:
        llm_config["vocab_size"] = len(tokenizer)
    if spec.llm is None:
        llm_config.setdefault("pad_token_id", tokenizer.pad_token_id)
        llm_config.setdefault("eos_token_id", tokenizer.eos_token_id)
        llm_config.setdefault("bos_token_id", tokenizer.bos_token_id)
    llm = build_language_model(spec.llm, llm_config, pretrained=pretrained, torch_dtype=torch_dtype)
    if llm.get_input_embeddings().num_embeddings < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer))
    projector = build_projector(spec.projector, vision.hidden_size, llm.config.get_text_config().hidden_size)
    image_token_id = tokenizer.convert_tokens_to_ids(spec.image_token)
    return VisionLanguageModel(vision, projector, llm, image_token_id)
