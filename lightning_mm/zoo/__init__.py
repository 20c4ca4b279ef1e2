"""Model zoo: named specs (``list_models``), and ``create_model`` returning a ready MultimodalModule."""

from lightning_mm.zoo import llava, small, smolvlm, tiny  # noqa: F401  (registers entries)
from lightning_mm.zoo.factory import create_model, parameter_counts
from lightning_mm.zoo.registry import get_spec, list_models, register_model
from lightning_mm.zoo.spec import ModelSpec, build_network, check_tokenizer, count_image_tokens, load_tokenizer

__all__ = [
    "ModelSpec",
    "build_network",
    "check_tokenizer",
    "count_image_tokens",
    "create_model",
    "get_spec",
    "list_models",
    "load_tokenizer",
    "parameter_counts",
    "register_model",
]
