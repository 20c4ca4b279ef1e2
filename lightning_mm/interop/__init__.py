"""Interop with transformers' VLM classes: import their checkpoints (``hf:<id or dir>``) and export ours to them.

Family-agnostic pieces, leaves first: ``keys`` (weight-name rules) -> ``towers`` (CLIP / SigLIP config and weight
mapping) -> ``hf_config`` (spec fields shared by the converters) -> ``converters`` (the converter of a ``model_type``,
found through its family) -> ``checkpoint`` (reading and strict loading) -> ``export`` (``export_hf``). Each family's
converter and processor live in its folder (``lightning_mm/families/<family>/``).
"""

from lightning_mm.interop.checkpoint import checkpoint_spec_fields, load_checkpoint, read_state_dict
from lightning_mm.interop.converters import converter_for_config
from lightning_mm.interop.keys import KeyRule, apply_rules
from lightning_mm.interop.towers import TowerFamily, register_tower, tower_for_hf, tower_for_timm

__all__ = [
    "KeyRule",
    "TowerFamily",
    "apply_rules",
    "checkpoint_spec_fields",
    "converter_for_config",
    "load_checkpoint",
    "read_state_dict",
    "register_tower",
    "tower_for_hf",
    "tower_for_timm",
]
