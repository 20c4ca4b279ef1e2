"""Names that moved stay importable from their old module for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib

import pytest

MOVED = [
    ("lightning_mm.zoo", "create_model", "lightning_mm.factory", "create_model"),
    ("lightning_mm.zoo.factory", "create_model", "lightning_mm.factory", "create_model"),
    ("lightning_mm.cli", "register_command", "lightning_mm.commands.registry", "register_command"),
    ("lightning_mm.callbacks.checkpointing", "CHECKPOINT_KEY", "lightning_mm.checkpoint_format", "CHECKPOINT_KEY"),
    ("lightning_mm.callbacks.checkpointing", "base_fingerprint", "lightning_mm.checkpoint_format", "base_fingerprint"),
    ("lightning_mm.distributed", "clean_name", "lightning_mm.checkpoint_format", "clean_name"),
    ("lightning_mm.distributed.fsdp1", "clean_name", "lightning_mm.checkpoint_format", "clean_name"),
]


@pytest.mark.parametrize(("old", "name", "new", "new_name"), MOVED)
def test_old_names_warn_and_give_the_new_object(old, name, new, new_name):
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {new}.{new_name}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), new_name)


def test_unknown_names_still_raise():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        importlib.import_module("lightning_mm.zoo").nothing  # noqa: B018
