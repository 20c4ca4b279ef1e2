"""Experiment configuration: YAML loading, dotted overrides, placements, stage fingerprints, object construction."""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "COMPONENT_LETTERS",
    "DEFAULT_CONFIG",
    "apply_overrides",
    "deep_merge",
    "fingerprint",
    "import_object",
    "instantiate",
    "load_config",
    "optimizer_factory",
    "parse_placement",
    "placement_label",
]

DEFAULT_CONFIG = Path(__file__).with_name("experiment.yaml")
COMPONENT_LETTERS = ("V", "P", "L")  # the order placements are written in: V+P+L
BASELINE = "none"


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested mappings merged key by key (``update`` wins; ``None`` values too)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(config: Mapping[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` assignments (values parsed as YAML: ``3``, ``[0, 1]``, ``null``, ``{r: 16}``).

    Raises:
        ValueError: for an assignment without ``=``.
    """
    out = copy.deepcopy(dict(config))
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"Override {assignment!r} is not of the form key.sub=value.")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = yaml.safe_load(raw)
    return out


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read the experiment YAML (default: ``experiment.yaml`` next to this file) and merge ``overrides`` into it."""
    config = yaml.safe_load(Path(path or DEFAULT_CONFIG).read_text()) or {}
    return deep_merge(config, overrides or {})


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-serialisable parts (the settings a stage's output depends on)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_placement(name: str) -> tuple[str, ...]:
    """``"V+L"`` -> ``("V", "L")`` (canonical order V, P, L); ``"none"`` -> ``()``.

    Raises:
        ValueError: for an unknown letter or a repeated one.
    """
    if name == BASELINE:
        return ()
    letters = [part.strip() for part in name.split("+")]
    unknown = [x for x in letters if x not in COMPONENT_LETTERS]
    if unknown or len(set(letters)) != len(letters):
        raise ValueError(
            f"Placement {name!r}: write '{BASELINE}' or '+'-joined distinct letters of {COMPONENT_LETTERS}."
        )
    return tuple(x for x in COMPONENT_LETTERS if x in letters)


def placement_label(letters: Sequence[str]) -> str:
    """Inverse of :func:`parse_placement`."""
    return "+".join(x for x in COMPONENT_LETTERS if x in letters) or BASELINE


def import_object(path: str) -> Any:
    """``package.module.Name`` -> the object."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def instantiate(spec: Mapping[str, Any], **extra: Any) -> Any:
    """Build ``{"class_path": ..., "init_args": {...}}`` (``extra`` wins over ``init_args``)."""
    return import_object(spec["class_path"])(**{**(spec.get("init_args") or {}), **extra})


def accepts(cls: type, argument: str) -> bool:
    """Whether ``cls(...)`` takes a keyword ``argument``."""
    return argument in inspect.signature(cls).parameters


def optimizer_factory(spec: Mapping[str, Any]) -> Any:
    """``{"class_path": "torch.optim.AdamW", "init_args": {"lr": ...}}`` -> a callable taking parameter groups."""
    return functools.partial(import_object(spec["class_path"]), **(spec.get("init_args") or {}))
