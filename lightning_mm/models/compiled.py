"""Compiled regions: each repeated block of a network compiled in place with ``torch.compile``.

Compiling block by block (each vision block, each LLM decoder layer: the components' ``blocks()``,
:mod:`lightning_mm.models.component`) instead of the whole network keeps compile time small: identical blocks reuse
the same compiled code (dynamo guards on a block's structure, not its identity, since parameters are graph inputs), a
graph break in one block costs that block only, and the embedding, splice and loss stay eager. A block is compiled in
place, as ``nn.Module.compile`` does (the compiled call is set on the instance): it keeps its class, its names and its
state-dict keys (no ``_orig_mod.`` wrapper), so placements, activation checkpointing, FSDP units, checkpoints and
export see the same modules as without it.

The compiled code runs in training mode only (a frozen tower under ``no_grad`` too); evaluation and generation, in eval
mode, run the blocks eagerly: a KV-cached generation changes the shapes at every token (prompt, then one token
against a growing cache), which would recompile each block several times for a step that is not the one sped up.

Apply it last, after the placements (LoRA layers inside a block are compiled with it), activation checkpointing and
sharding: :meth:`~lightning_mm.MultimodalModule.configure_model` does. Compilation itself happens lazily, in the first
forward (and backward) of each block; :class:`FirstStepTimer` reports what that first step cost.
"""

from __future__ import annotations

import time
import types
from typing import Any

import torch
import torch._dynamo.config
from torch import nn

from lightning_mm.models.component import COMPONENTS, as_component

__all__ = ["FirstStepTimer", "compile_block", "compile_regions", "compiled_regions", "is_compiled"]


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` was compiled in place (:func:`compile_block`, or ``nn.Module.compile``)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def compiled_regions(network: nn.Module) -> list[str]:
    """Names (relative to ``network``) of the modules compiled in place, in forward order."""
    return [name for name, m in network.named_modules() if name and is_compiled(m)]


def _train_call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The compiled call in training mode; the module's eager call in eval mode."""
    if self.training:
        return self._compiled_train_call(*args, **kwargs)
    return self._call_impl(*args, **kwargs)


def compile_block(module: nn.Module, **options: Any) -> None:
    """Compile ``module`` in place, for training steps (see the module docstring); ``options`` go to ``torch.compile``."""
    module._compiled_train_call = torch.compile(module._call_impl, **options)
    module._compiled_call_impl = types.MethodType(_train_call, module)


def compile_regions(network: nn.Module, **options: Any) -> list[str]:
    """Compile each block of each component of ``network`` in place (once: compiled blocks are left as they are).

    Args:
        network: A :class:`~lightning_mm.models.VisionLanguageModel` (``vision``, ``projector``, ``llm``).
        **options: ``torch.compile`` options (``mode``, ``dynamic``, ``backend``, ``fullgraph``...).

    Returns:
        The names of the compiled modules (relative to ``network``): the vision tower's blocks and the LLM's decoder
        layers (a projector without blocks stays eager).

    Under activation checkpointing the checkpoint runs inside the compiled block (transformers checkpoints a layer's
    ``forward``, below the module call that is compiled), where dynamo refuses any Python side effect of the forward:
    transformers' kernel routing sets and resets a context variable in each attention forward, which would break the
    graph and leave every checkpointed decoder layer eager. That side effect has no effect on the tensors, so dynamo
    is told not to replay forward side effects in the recompute
    (``torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint``, a process-wide setting).
    """
    torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True
    for name in COMPONENTS:
        for block in as_component(getattr(network, name), name).blocks():
            if not is_compiled(block):
                compile_block(block, **options)
    return compiled_regions(network)


class FirstStepTimer:
    """Wall time of the first two training steps, to report what compiling the first one cost, once.

    Call :meth:`start` before a step and :meth:`stop` after it; after the second step :meth:`stop` returns one
    sentence (then None for ever).

    Args:
        regions: How many modules were compiled (named in the sentence).
    """

    def __init__(self, regions: int) -> None:
        self.regions = regions
        self.times: list[float] = []
        self._start: float | None = None
        self.reported = False

    def start(self) -> None:
        """Mark the start of a training step."""
        if not self.reported:
            self._start = time.perf_counter()

    def stop(self) -> str | None:
        """Mark the end of a training step; after the second, the sentence reporting the compile time."""
        if self.reported or self._start is None:
            return None
        self.times.append(time.perf_counter() - self._start)
        self._start = None
        if len(self.times) < 2:
            return None
        self.reported = True
        first, second = self.times
        return (
            f"Compiled regions: {self.regions} modules compiled in place; the first training step took {first:.1f} s "
            f"(compilation included), the second {second:.2f} s, so compiling took about {first - second:.1f} s."
        )
