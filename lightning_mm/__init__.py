"""lightning_mm: a PyTorch Lightning plugin and model zoo for LLaVA-style multimodal LLMs."""

from lightning_mm.factory import create_model
from lightning_mm.interop.export import export_hf
from lightning_mm.models import VisionLanguageModel
from lightning_mm.module import MultimodalModule
from lightning_mm.zoo import ModelSpec, get_spec, list_models, register_model

__all__ = [
    "ModelSpec",
    "MultimodalModule",
    "VisionLanguageModel",
    "create_model",
    "export_hf",
    "get_spec",
    "list_models",
    "register_model",
]
__version__ = "0.1.0"
