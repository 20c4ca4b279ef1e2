"""Interop with transformers' VLM classes: import their checkpoints (``hf:<id or dir>``) and export ours to them.

Layers, leaves first: ``keys`` (weight-name rules) -> ``towers`` (CLIP / SigLIP config and weight mapping) ->
``llava`` / ``smolvlm`` (one converter per transformers family) -> ``converters`` (registry) -> ``checkpoint`` (reading and strict
loading) and ``processor`` -> ``export`` (``export_hf``).
"""

from lightning_mm.interop.checkpoint import checkpoint_spec_fields, load_checkpoint, read_state_dict
from lightning_mm.interop.converters import converter_for_config, converter_for_network, register_converter
from lightning_mm.interop.keys import KeyRule, apply_rules
from lightning_mm.interop.llava import LlavaConverter
from lightning_mm.interop.smolvlm import SmolVLMConverter
from lightning_mm.interop.towers import TowerFamily, register_tower, tower_for_hf, tower_for_timm

__all__ = [
    "KeyRule",
    "LlavaConverter",
    "SmolVLMConverter",
    "TowerFamily",
    "apply_rules",
    "checkpoint_spec_fields",
    "converter_for_config",
    "converter_for_network",
    "load_checkpoint",
    "read_state_dict",
    "register_converter",
    "register_tower",
    "tower_for_hf",
    "tower_for_timm",
]
