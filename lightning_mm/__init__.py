"""lightning_mm: a PyTorch Lightning plugin and model zoo for LLaVA-style multimodal LLMs."""

from lightning_mm.data.contract import DataContract
from lightning_mm.factory import create_model
from lightning_mm.families import Family, get_family, list_families, register_family
from lightning_mm.interop.export import export_hf
from lightning_mm.models import VisionLanguageModel
from lightning_mm.module import MultimodalModule
from lightning_mm.preference import PreferenceModule
from lightning_mm.zoo import ModelSpec, get_spec, list_models, register_model

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
