"""Plain-torch building blocks: vision tower, projector, language model, the composed network, and the interface each
component answers (blocks, unused parameters, LoRA targets, sharding and checkpointing units)."""

from lightning_mm.models import token_reduction  # noqa: F401  (registers the token-reducing projectors)
from lightning_mm.models.component import (
    COMPONENTS,
    Component,
    LanguageModelComponent,
    ModuleComponent,
    TimmTowerComponent,
    as_component,
)
from lightning_mm.models.language import build_language_model, decoder_of
from lightning_mm.models.projector import build_projector, list_projectors, register_projector
from lightning_mm.models.vision import VisionTower, check_timm_model_name
from lightning_mm.models.vlm import VisionLanguageModel, splice_image_features

__all__ = [
    "COMPONENTS",
    "Component",
    "LanguageModelComponent",
    "ModuleComponent",
    "TimmTowerComponent",
    "VisionLanguageModel",
    "VisionTower",
    "as_component",
    "build_language_model",
    "build_projector",
    "check_timm_model_name",
    "decoder_of",
    "list_projectors",
    "register_projector",
    "splice_image_features",
]
