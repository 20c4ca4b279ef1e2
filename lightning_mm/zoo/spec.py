"""ModelSpec: everything needed to build a named vision-language model, and the builders that read it."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AddedToken, AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lightning_mm.data.scenes import build_synthetic_tokenizer
from lightning_mm.errors import ConfigError, did_you_mean
from lightning_mm.families.registry import get_family
from lightning_mm.interop.checkpoint import load_checkpoint
from lightning_mm.models import VisionLanguageModel, VisionTower, build_language_model
from lightning_mm.models.projector_io import load_projector_weights

__all__ = [
    "ModelSpec",
    "build_network",
    "check_tokenizer",
    "count_image_tokens",
    "load_tokenizer",
    "vision_tower",
]

log = logging.getLogger(__name__)

BUILTIN_TOKENIZERS = ("builtin:synthetic",)


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its family, vision tower, projector, LLM, tokenizer and chat format.

    Variants are made with :meth:`replace`, overriding only the fields that differ; dict fields (``vision_kwargs``,
    ``llm_config``) are merged key by key.

    A spec is *complete* when ``llm_config`` holds ``vocab_size`` and ``image_token_id`` is set: its network then
    builds without the tokenizer (offline, e.g. on the meta device), and a tokenizer loaded later is checked against
    those two numbers.

    Attributes:
        name: Registry name.
        family: The model family (:func:`~lightning_mm.families.get_family`): how the projector is built, how images
            become tiles and prompt ids, which transformers formats it reads and writes (``lightning-mm zoo`` shows
            each entry's; or a family of your own).
        vision_model: timm architecture, optionally with a pretrained tag (``vit_large_patch14_clip_336.openai``).
        vision_kwargs: Extra ``timm.create_model`` arguments (``img_size``, ``act_layer``, ...).
        feature_layer: Block of the tower whose output is used (LLaVA: -2).
        drop_prefix_tokens: Drop CLS/register tokens (LLaVA: patch tokens only; SigLIP has none to drop).
        feature_norm: Read the feature layer through the tower's final norm (image-splitting models: last block +
            ``post_layernorm``; LLaVA: off).
        projector: Projector name (``linear``, ``mlp2x_gelu``, ...).
        projector_weights: File of trained projector weights loaded when building with ``pretrained=True``: LLaVA's
            stage-1 ``mm_projector.bin`` or a Lightning checkpoint of this project.
        llm: Hub id or local path of the causal LM (None: build from ``llm_config`` alone).
        llm_config: Architecture of the LM. With ``model_type`` in it, the LM builds from it alone when not
            pretrained (offline); with ``pretrained=True`` its entries override the checkpoint's config, except
            ``vocab_size``, which resizes the loaded embeddings. ``vocab_size`` left out means ``len(tokenizer)``.
        tokenizer: Hub id or path of the tokenizer (None: ``llm``), or ``builtin:synthetic``.
        template: Chat template name for the data (``chatml``, ``vicuna_v1``, ``plain``, ...).
        image_token: Text of the image placeholder token (added to the tokenizer when missing).
        image_token_id: Id the image token has in the tokenizer (None: ask the tokenizer).
        description: One line for ``lightning-mm zoo``.
        checkpoint: Hub id or directory of a whole released VLM in transformers' format
            (``LlavaForConditionalGeneration``): with ``pretrained=True`` the network builds from the configs above and
            this checkpoint's weights are converted and loaded strictly (:mod:`lightning_mm.interop`);
            ``vision_model``'s tag and ``llm`` are then not read. None: start from the components.
        image_tiling: Any-resolution tiling settings, read by the families that tile images: ``grid_pinpoints``
            and optionally ``vision_aspect_ratio`` (a cap on the tokens).
        special_token_ids: Special tokens besides the image token that the tokenizer holds at fixed ids (Gemma 3's
            ``<start_of_image>``, ...): checked against the tokenizer; the built-in synthetic tokenizer is laid out
            with them (and with ``image_token`` at ``image_token_id``), so a tiny model of a family with such tokens
            trains on the built-in task.
    """

    name: str
    vision_model: str
    projector: str = "mlp2x_gelu"
    llm: str | None = None
    llm_config: dict[str, Any] = field(default_factory=dict)
    vision_kwargs: dict[str, Any] = field(default_factory=dict)
    feature_layer: int = -2
    drop_prefix_tokens: bool = True
    feature_norm: bool = False
    tokenizer: str | None = None
    template: str = "chatml"
    image_token: str = "<image>"
    image_token_id: int | None = None
    projector_weights: str | None = None
    description: str = ""
    checkpoint: str | None = None
    image_tiling: dict[str, Any] | None = None
    family: str = "llava"
    special_token_ids: dict[str, int] = field(default_factory=dict)

    def replace(self, **overrides: Any) -> ModelSpec:
        """A copy with ``overrides`` applied (dict fields merged, others replaced)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            hints = "".join(did_you_mean(k, names, 1) for k in unknown)
            raise ConfigError(f"Unknown ModelSpec field(s) {unknown}.{hints} Known: {', '.join(sorted(names))}.")
        for key in ("vision_kwargs", "llm_config"):
            if key in overrides and overrides[key] is not None:
                overrides[key] = {**getattr(self, key), **overrides[key]}
        return dataclasses.replace(self, **overrides)

    @property
    def needs_tokenizer(self) -> bool:
        """Whether building the network needs the tokenizer (vocabulary size or image-token id left to it)."""
        return self.image_token_id is None or "vocab_size" not in self.llm_config


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The spec's tokenizer, with the image token registered as a special token.

    Args:
        spec: Model spec.

    Returns:
        A transformers tokenizer that maps ``spec.image_token`` to a single id.

    Raises:
        ValueError: if the tokenizer disagrees with a complete spec (image-token id, or more tokens than the LM's
            embedding rows).
    """
    source = spec.tokenizer or spec.llm
    if source == "builtin:synthetic":
        placed = {spec.image_token: spec.image_token_id} if spec.image_token_id is not None else {}
        tok = build_synthetic_tokenizer({**spec.special_token_ids, **placed})
    elif source is None:
        raise ValueError(f"Model {spec.name!r} names neither a tokenizer nor an LLM to take one from.")
    else:
        tok = AutoTokenizer.from_pretrained(source)
    if spec.image_token not in tok.get_vocab():
        tok.add_tokens([AddedToken(spec.image_token, special=True, normalized=False)], special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    check_tokenizer(spec, tok)
    return tok


def check_tokenizer(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ``ValueError`` when ``tokenizer`` contradicts the spec's image-token id or vocabulary size."""
    token_id = tokenizer.convert_tokens_to_ids(spec.image_token)
    if spec.image_token_id is not None and token_id != spec.image_token_id:
        raise ValueError(
            f"Model {spec.name!r} expects {spec.image_token!r} at id {spec.image_token_id}, but its tokenizer maps it to "
            f"{token_id}: set `image_token_id` to match the tokenizer."
        )
    wrong = {t: i for t, i in spec.special_token_ids.items() if tokenizer.convert_tokens_to_ids(t) != i}
    if wrong:
        raise ValueError(f"Model {spec.name!r} expects special tokens at {wrong}; its tokenizer has them elsewhere.")
    vocab_size = spec.llm_config.get("vocab_size")
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(
            f"Model {spec.name!r} has {vocab_size} embedding rows but its tokenizer has {len(tokenizer)} tokens."
        )


def vision_tower(spec: ModelSpec, pretrained: bool = False) -> VisionTower:
    """The timm vision tower of ``spec`` (pretrained weights as its ``vision_model`` tag names, when asked)."""
    return VisionTower(
        spec.vision_model,
        pretrained=pretrained,
        feature_layer=spec.feature_layer,
        drop_prefix_tokens=spec.drop_prefix_tokens,
        model_kwargs=spec.vision_kwargs,
        feature_norm=spec.feature_norm,
    )


def count_image_tokens(spec: ModelSpec) -> tuple[int, dict[str, Any]]:
    """Tokens one view of an image becomes after the tower and projector, read from a meta-device forward pass.

    A view is the whole image for a fixed-size model, one tile for a tiling one (its family counts what it adds, e.g.
    a row's newline); the family's layout turns views into an image's count.

    Returns:
        (tokens per view, timm data config of the tower).
    """
    family = get_family(spec.family)
    with torch.device("meta"):
        tower = vision_tower(spec)
        projector = family.build_projector(spec, tower, tower.hidden_size)
        cfg = tower.data_config()
        x = torch.empty(1, *cfg["input_size"])  # (1, 3, H, W)
        tokens = family.view_tokens(projector, tower(x))
    return tokens, cfg


def _changed_config_keys(name_or_path: str, overrides: dict[str, Any]) -> list[str]:
    """Config entries of checkpoint ``name_or_path`` whose values ``overrides`` change."""
    base = AutoConfig.from_pretrained(name_or_path).to_dict()
    new = AutoConfig.from_pretrained(name_or_path, **overrides).to_dict()
    return sorted(k for k in set(base) | set(new) if k != "transformers_version" and base.get(k) != new.get(k))


def _language_model(
    spec: ModelSpec,
    tokenizer: PreTrainedTokenizerBase | None,
    pretrained: bool,
    torch_dtype: torch.dtype,
    quantization_config: Any = None,
) -> PreTrainedModel:
    config = dict(spec.llm_config)
    declared_vocab = config.pop("vocab_size", None)
    if pretrained:
        if spec.llm is None:
            raise ValueError(f"Model {spec.name!r} has no `llm` checkpoint to load with pretrained=True.")
        model_type = config.pop("model_type", None)
        changed = _changed_config_keys(spec.llm, config) if config else []
        if changed:
            log.warning("%s: llm_config overrides %s of %s's config.", spec.name, ", ".join(changed), spec.llm)
        llm = build_language_model(spec.llm, config, True, torch_dtype, quantization_config=quantization_config)
        if model_type is not None and llm.config.model_type != model_type:
            raise ValueError(
                f"Model {spec.name!r} expects a {model_type!r} LM, {spec.llm} is {llm.config.model_type!r}."
            )
    elif spec.llm is None or "model_type" in config:  # the architecture is fully written down: build offline
        if tokenizer is not None:
            for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
                config.setdefault(key, getattr(tokenizer, key))
        config["vocab_size"] = declared_vocab if declared_vocab is not None else len(tokenizer)
        llm = build_language_model(None, config, pretrained=False, torch_dtype=torch_dtype)
    else:  # config read from the checkpoint, overridden by llm_config
        if declared_vocab is not None:
            config["vocab_size"] = declared_vocab
        llm = build_language_model(spec.llm, config, pretrained=False, torch_dtype=torch_dtype)
    rows = llm.get_input_embeddings().num_embeddings
    if declared_vocab is not None and rows != declared_vocab:
        llm.resize_token_embeddings(declared_vocab)  # e.g. 32000 (vicuna) -> 32064 (LLaVA-1.5: <image> + padding)
    elif declared_vocab is None and rows < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer))
    return llm


def build_network(
    spec: ModelSpec,
    tokenizer: PreTrainedTokenizerBase | None = None,
    pretrained: bool = False,
    torch_dtype: torch.dtype | None = None,
    llm_quantization: Any = None,
) -> VisionLanguageModel:
    """Build the plain-torch network of ``spec``.

    A complete spec (``vocab_size`` in ``llm_config`` and ``image_token_id`` set) builds without its tokenizer, so it
    builds offline and on the meta device; otherwise the tokenizer is loaded when not given.

    Args:
        spec: Model spec.
        tokenizer: Its tokenizer (None: loaded only if the spec needs it). Sets the LM's vocabulary size when the
            config leaves it out, and the image token id; checked against a complete spec.
        pretrained: Load every weight source the spec names: the whole VLM ``checkpoint`` when the spec has one,
            else timm's pretrained tag and the LLM checkpoint through transformers ``from_pretrained``; then
            ``projector_weights``. Off: random init from the configs.
        torch_dtype: Parameter dtype of the LLM (None: the default dtype, float32; a checkpoint's own dtype is not
            kept, so pretrained and random builds agree).
        llm_quantization: transformers' ``BitsAndBytesConfig`` for a pretrained LLM checkpoint (QLoRA): its linear
            layers are quantised while they load (:func:`lightning_mm.placement.quantize.llm_quantization`).

    Returns:
        The :class:`~lightning_mm.models.VisionLanguageModel`.
    """
    if tokenizer is None and spec.needs_tokenizer:
        tokenizer = load_tokenizer(spec)
    if tokenizer is not None:
        check_tokenizer(spec, tokenizer)
    torch_dtype = torch_dtype or torch.get_default_dtype()
    from_checkpoint = pretrained and spec.checkpoint is not None  # one whole VLM instead of its components
    vision = vision_tower(spec, pretrained and not from_checkpoint)
    llm = _language_model(spec, tokenizer, pretrained and not from_checkpoint, torch_dtype, llm_quantization)
    text_dim = llm.config.get_text_config().hidden_size
    projector = get_family(spec.family).build_projector(spec, vision, text_dim)
    if spec.projector_weights is not None:
        if pretrained:
            load_projector_weights(projector, spec.projector_weights)
        else:
            log.info("%s: projector_weights are loaded with pretrained=True only; random init.", spec.name)
    if spec.image_token_id is not None:
        image_token_id = spec.image_token_id
    else:
        image_token_id = tokenizer.convert_tokens_to_ids(spec.image_token)
    pattern = get_family(spec.family).attention_pattern(spec)
    network = VisionLanguageModel(vision, projector, llm, image_token_id, attention_pattern=pattern)
    if from_checkpoint:
        load_checkpoint(network, spec.checkpoint)
        if spec.projector_weights is not None:  # an explicit projector file overrides the checkpoint's projector
            load_projector_weights(projector, spec.projector_weights)
    # from_pretrained leaves the LM in eval mode (dropout off): a built network starts in training mode
    return network.train()
