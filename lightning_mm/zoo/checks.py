"""Checks of a :class:`~lightning_mm.zoo.ModelSpec` at construction: every name it holds must be known."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch

from lightning_mm.data.templates import list_templates
from lightning_mm.errors import ConfigError, did_you_mean
from lightning_mm.families.registry import get_family, list_families
from lightning_mm.models import build_projector, list_projectors
from lightning_mm.zoo.spec import ModelSpec

__all__ = ["check_spec"]


def _where(spec: ModelSpec, key: str, overrides: Mapping[str, Any]) -> str:
    return f"model_overrides.{key}" if key in overrides else f"{key} of model {spec.name!r}"


def _tower_problem(name: str) -> str | None:
    arch, _, tag = name.partition(".")
    if timm.is_model(arch):
        if not tag or timm.list_pretrained(name):
            return None
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
        return f"timm has no pretrained tag {tag!r} for {arch!r}.{did_you_mean(tag, tags)} Tags: {', '.join(tags)}"
    candidates = timm.list_models(f"{arch.split('_')[0]}*") or timm.list_models()
    return f"Unknown timm vision model {name!r}.{did_you_mean(arch, candidates)}"


def check_spec(spec: ModelSpec, overrides: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`~lightning_mm.errors.ConfigError` when ``spec`` names a family, template, projector or tower that
    does not exist, naming the key (``model_overrides.template`` when an override set it).

    Nothing is built or downloaded: the names are looked up in the template and projector registries and in timm.

    Args:
        spec: The spec a module will build.
        overrides: The overrides it was made with (``model_overrides``), to name the key in errors.
    """
    overrides = overrides or {}
    try:
        get_family(spec.family)
    except ConfigError as err:
        raise ConfigError(
            f"{_where(spec, 'family', overrides)}: unknown model family {spec.family!r}."
            f"{did_you_mean(spec.family, list_families())} Known: {', '.join(list_families())}."
        ) from err
    templates = list_templates()
    if spec.template not in templates:
        raise ConfigError(
            f"{_where(spec, 'template', overrides)}: unknown chat template {spec.template!r}."
            f"{did_you_mean(spec.template, templates)} Known: {', '.join(templates)}."
        )
    try:
        with torch.device("meta"):
            build_projector(spec.projector, 1, 1)
    except ValueError as err:
        raise ConfigError(
            f"{_where(spec, 'projector', overrides)}: unknown projector {spec.projector!r}."
            f"{did_you_mean(spec.projector, list_projectors())} Known: {', '.join(list_projectors())} "
            "(or mlp<N>x_gelu)."
        ) from err
    problem = _tower_problem(spec.vision_model)
    if problem is not None:
        raise ConfigError(f"{_where(spec, 'vision_model', overrides)}: {problem}. See `timm.list_models()`.")
