"""Model zoo: named specs (``list_models``), their builders and parameter counts (family-agnostic).

The entries themselves live with their family (``lightning_mm/families/<family>/``), registered when the families load.

``create_model`` (a ready MultimodalModule) lives above the zoo and the module: :mod:`lightning_mm.factory`.
"""

from lightning_mm.zoo.factory import parameter_counts
from lightning_mm.zoo.registry import get_spec, list_models, register_model
from lightning_mm.zoo.spec import ModelSpec, build_network, check_tokenizer, count_image_tokens, load_tokenizer

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
