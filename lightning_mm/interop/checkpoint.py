"""Read transformers VLM checkpoints (hub id or local directory): spec fields from the config, weights loaded strictly.

Hub ids resolve through ``huggingface_hub`` (the local cache first, a download otherwise); local directories are
read as they are. Weights come from ``model.safetensors``, a sharded ``model.safetensors.index.json`` or, failing
those, ``pytorch_model.bin``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig

from lightning_mm.interop.converters import converter_for_config

__all__ = [
    "checkpoint_spec_fields",
    "config_spec_fields",
    "load_checkpoint",
    "read_config",
    "read_state_dict",
    "resolve_checkpoint",
]

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"  # transformers 4
PROCESSOR = "processor_config.json"  # transformers 5: the image processor's settings under "image_processor"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_MAX_NAMED = 8  # keys named in an error message


def resolve_checkpoint(source: str, weights: bool = False) -> Path:
    """Local directory of checkpoint ``source`` (a directory, or a hub id fetched into the hub cache).

    Args:
        source: Local directory or hub id (``llava-hf/llava-1.5-7b-hf``).
        weights: Fetch the weight files too (else configs, tokenizer and processor files only).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"Checkpoint directory {source!r} does not exist (or is not a directory).")
    try:
        root = Path(snapshot_download(source, allow_patterns=["*.json", "*.jinja", "*.model", "*.txt"]))
        if weights:  # safetensors when the repository has them; PyTorch pickles only otherwise
            root = Path(snapshot_download(source, allow_patterns=["*.safetensors"]))
            if not any(root.glob("*.safetensors")):
                root = Path(snapshot_download(source, allow_patterns=["*.bin"]))
    except (OSError, HFValidationError) as err:  # not found, offline, gated, not a valid repository id
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(
            f"Checkpoint {source!r} is not a local directory and could not be fetched from the hub: {reason}"
        ) from err
    return root


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_config(source: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(``config.json``, the image processor's settings or None) of checkpoint ``source``."""
    root = resolve_checkpoint(source)
    config = _read_json(root / CONFIG)
    if config is None:
        raise FileNotFoundError(f"{source}: no {CONFIG}; not a transformers checkpoint directory.")
    preprocessor = _read_json(root / PREPROCESSOR)
    if preprocessor is None:
        preprocessor = (_read_json(root / PROCESSOR) or {}).get("image_processor")
    return config, preprocessor


def config_spec_fields(config: dict[str, Any], preprocessor: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """:class:`~lightning_mm.zoo.ModelSpec` fields (all but ``name``) of a checkpoint, from its configs alone.

    Args:
        config: Its ``config.json``.
        preprocessor: Its image processor's settings (None: timm's defaults for the tower).
        source: Hub id or directory the weights are read from with ``pretrained=True`` (and named in errors).
    """
    converter = converter_for_config(config, source)
    return converter.spec_fields(AutoConfig.for_model(**config), source, preprocessor)


def checkpoint_spec_fields(source: str) -> dict[str, Any]:
    """:class:`~lightning_mm.zoo.ModelSpec` fields (all but ``name``) of the checkpoint ``source``."""
    return config_spec_fields(*read_config(source), source)


def read_state_dict(source: str) -> dict[str, torch.Tensor]:
    """Every tensor of checkpoint ``source`` (safetensors, sharded or not; PyTorch pickles as a fallback)."""
    root = resolve_checkpoint(source, weights=True)
    found = next((root / n for n in _WEIGHTS if (root / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{source}: no weights ({', '.join(_WEIGHTS)}).")
    if found.name.endswith(".index.json"):
        files = sorted(set(json.loads(found.read_text())["weight_map"].values()))
    else:
        files = [found.name]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if name.endswith(".safetensors"):
            state.update(load_file(root / name))
        else:
            state.update(torch.load(root / name, map_location="cpu", weights_only=True))
    return state


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMED])
    return shown + (f" and {len(keys) - _MAX_NAMED} more" if len(keys) > _MAX_NAMED else "")


def load_checkpoint(network: nn.Module, source: str) -> None:
    """Load the weights of checkpoint ``source`` into ``network``, converted and strictly.

    Raises:
        ValueError: naming the keys the checkpoint lacks, the keys that are not part of the model (unexpected), or
            tensors whose shape differs from the network's (transformers' names).
    """
    config, _ = read_config(source)
    converter = converter_for_config(config, source)
    state = converter.normalize(read_state_dict(source))
    ours = network.state_dict()
    expected, _ = converter.to_hf(ours, network)  # what transformers' model of this config holds
    tied, _ = converter.to_hf({k: ours[k] for k in converter.tied_keys(network)}, network)
    missing = sorted(set(expected) - set(state) - set(tied))
    if missing:
        raise ValueError(f"{source}: key(s) missing from the checkpoint: {_named(missing)}.")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"{source}: unexpected key(s) in the checkpoint, not part of the model: {_named(unexpected)}.")
    wrong = [
        f"{k} {tuple(v.shape)} (model: {tuple(expected[k].shape)})"
        for k, v in state.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise ValueError(f"{source}: tensor shape(s) differ from the model's config: {_named(wrong)}.")
    converted, left = converter.to_ours(state, network)
    if left:  # every name was checked above: a rule that takes nothing is a converter defect
        raise ValueError(f"{source}: no conversion for {_named(left)}.")
    _check_tied(network, converted, converter, source)
    network.load_state_dict(converted, strict=False)


def _check_tied(network: nn.Module, converted: dict[str, torch.Tensor], converter: Any, source: str) -> None:
    """Raise when the checkpoint holds different values for tensors our network shares (transformers unties them)."""
    ours = network.state_dict()
    by_storage: dict[int, list[str]] = {}
    for key, value in ours.items():
        if key in converted and value.numel():  # empty tensors all have data_ptr 0
            by_storage.setdefault(value.data_ptr(), []).append(key)
    for keys in by_storage.values():
        if any(not torch.equal(converted[k], converted[keys[0]]) for k in keys[1:]):
            names, _ = converter.to_hf({k: ours[k] for k in keys}, network)
            raise ValueError(
                f"{source}: {' and '.join(sorted(names))} are tied (tie_word_embeddings) but differ in the "
                "checkpoint; set tie_word_embeddings to false in its config.json (top level and text_config)."
            )
