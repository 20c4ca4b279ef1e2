"""Model zoo: named specs (``list_models``), and ``create_model`` returning a ready MultimodalModule."""

from lightning_mm.zoo import tiny  # noqa: F401  (registers entries)
from lightning_mm.zoo.registry import get_spec, list_models, register_model
from lightning_mm.zoo.spec import ModelSpec, build_network, count_image_tokens, load_tokenizer

__all__ = ["ModelSpec", "build_network", "count_image_tokens", "get_spec", "list_models", "load_tokenizer", "register_model"]
