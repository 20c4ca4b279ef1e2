"""Load a trained module from a Lightning checkpoint: adapters rebuilt, weights loaded, ready for inference."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import lightning as L

from lightning_mm.checkpoint.format import is_adapter_only
from lightning_mm.checkpoint.read import checkpoint_errors, local_checkpoint, read_checkpoint

__all__ = ["load_module"]


def load_module(
    checkpoint_path: str | Path,
    module_class: str = "lightning_mm.MultimodalModule",
    seed: int | None = None,
) -> Any:
    """Load a MultimodalModule (or subclass) from a Lightning checkpoint, adapters rebuilt and weights loaded.

    A full checkpoint holds every weight, so the base is built without downloading pretrained weights; an adapter-only
    checkpoint builds the base as the model's config says (pretrained weights when it was trained on them).

    Args:
        checkpoint_path: ``.ckpt`` file written by Lightning, or its ``http(s)://`` URL (downloaded into a temporary
            folder). It is loaded weights-only (:mod:`lightning_mm.checkpoint.read`).
        module_class: Dotted path of the LightningModule class (``package.module.Class``).
        seed: Seed set before the base is built: an adapter-only checkpoint of a randomly initialised base needs the
            run's seed (``seed_everything``) to rebuild the same base.
    """
    with local_checkpoint(checkpoint_path) as local:  # a URL is downloaded once
        # weights-only; a missing, empty, truncated or refused file: a short error naming it
        checkpoint = read_checkpoint(local, name=checkpoint_path, mmap=True)
        if seed is not None:
            L.seed_everything(seed, verbose=False)
        module_path, _, name = module_class.rpartition(".")
        cls = getattr(importlib.import_module(module_path), name)
        overrides = {} if is_adapter_only(checkpoint) else {"pretrained": False}
        del checkpoint
        with checkpoint_errors(checkpoint_path):
            module = cls.load_from_checkpoint(local, map_location="cpu", weights_only=True, **overrides)
    if getattr(module, "base_mismatch", None):
        raise ValueError(
            f"{checkpoint_path} holds adapters trained on another base of the {', '.join(module.base_mismatch)}: "
            "give the training run's seed (--seed) when its base was a random init."
        )
    module.configure_model()
    return module.eval()
