"""Model zoo: named specs (``list_models``), their builders and parameter counts (family-agnostic).

The entries themselves live with their family (``lightning_mm/families/<family>/``), registered when the families load.

``create_model`` (a ready MultimodalModule) lives above the zoo and the module: :mod:`lightning_mm.factory`.

The names are imported on first use (``import lightning_mm.zoo`` loads neither torch nor transformers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_mm.lazy import lazy_attributes

if TYPE_CHECKING:
    from lightning_mm.zoo.factory import parameter_counts
    from lightning_mm.zoo.registry import get_spec, list_models, register_model
    from lightning_mm.zoo.spec import ModelSpec, build_network, check_tokenizer, count_image_tokens, load_tokenizer

_SOURCES = {
    "ModelSpec": "lightning_mm.zoo.spec",
    "build_network": "lightning_mm.zoo.spec",
    "check_tokenizer": "lightning_mm.zoo.spec",
    "count_image_tokens": "lightning_mm.zoo.spec",
    "get_spec": "lightning_mm.zoo.registry",
    "list_models": "lightning_mm.zoo.registry",
    "load_tokenizer": "lightning_mm.zoo.spec",
    "parameter_counts": "lightning_mm.zoo.factory",
    "register_model": "lightning_mm.zoo.registry",
}

__all__ = [
    "ModelSpec",
    "build_network",
    "check_tokenizer",
    "count_image_tokens",
    "get_spec",
    "list_models",
    "load_tokenizer",
    "parameter_counts",
    "register_model",
]

__getattr__, __dir__ = lazy_attributes(__name__, _SOURCES)
