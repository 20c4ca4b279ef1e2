"""lightning_mm: a PyTorch Lightning plugin and model zoo for LLaVA-style multimodal LLMs.

The public names below are imported on first use: ``import lightning_mm`` itself loads neither torch nor Lightning
(the ``lightning-mm`` command starts faster), ``lightning_mm.MultimodalModule`` imports what the module needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_mm.lazy import lazy_attributes

if TYPE_CHECKING:
    from lightning_mm.data.contract import DataContract
    from lightning_mm.factory import create_model
    from lightning_mm.families import Family, get_family, list_families, register_family
    from lightning_mm.interop.export import export_hf
    from lightning_mm.models import VisionLanguageModel
    from lightning_mm.module import MultimodalModule
    from lightning_mm.preference import PreferenceModule
    from lightning_mm.zoo import ModelSpec, get_spec, list_models, register_model

_SOURCES = {
    "DataContract": "lightning_mm.data.contract",
    "Family": "lightning_mm.families",
    "ModelSpec": "lightning_mm.zoo",
    "MultimodalModule": "lightning_mm.module",
    "PreferenceModule": "lightning_mm.preference",
    "VisionLanguageModel": "lightning_mm.models",
    "create_model": "lightning_mm.factory",
    "export_hf": "lightning_mm.interop.export",
    "get_family": "lightning_mm.families",
    "get_spec": "lightning_mm.zoo",
    "list_families": "lightning_mm.families",
    "list_models": "lightning_mm.zoo",
    "register_family": "lightning_mm.families",
    "register_model": "lightning_mm.zoo",
}

__all__ = [
    "DataContract",
    "Family",
    "ModelSpec",
    "MultimodalModule",
    "PreferenceModule",
    "VisionLanguageModel",
    "create_model",
    "export_hf",
    "get_family",
    "get_spec",
    "list_families",
    "list_models",
    "register_family",
    "register_model",
]
__version__ = "0.1.0"

__getattr__, __dir__ = lazy_attributes(__name__, _SOURCES)
