"""``Converter``: the base of every family's converter between a transformers VLM class and our network.

A converter says how weight names map both ways (:meth:`Converter._convert`, one call per direction), how saved
checkpoints' names become transformers' module names (:meth:`Converter.normalize`), which of our weights a checkpoint
may leave out (:meth:`Converter.tied_keys`), and, in its subclass, the spec fields of a checkpoint (``spec_fields``),
transformers' config of a network (``hf_config``) and the class to build (``hf_model_class``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Converter"]

StateDict = dict[str, torch.Tensor]


class Converter:
    """Weight-name conversion both ways, shared by the families' converters (subclasses define :meth:`_convert`).

    Attributes:
        family: Name of the family the converter belongs to (its ``spec_fields`` name it).
        model_types: transformers ``model_type``s it reads and writes.
    """

    family: str = ""
    model_types: tuple[str, ...] = ()

    def normalize(self, state: StateDict) -> StateDict:
        """``state`` in transformers 5's module names (here: as saved; families with older layouts rename)."""
        return dict(state)

    def to_ours(self, state: StateDict, network: nn.Module) -> tuple[StateDict, list[str]]:
        """Convert transformers' tensors (any saved layout) to our names.

        Returns:
            (our tensors, transformers names no rule took).
        """
        return self._convert(self.normalize(state), network, "ours")

    def to_hf(self, state: StateDict, network: nn.Module) -> tuple[StateDict, list[str]]:
        """Convert our tensors to transformers 5's module names.

        Returns:
            (transformers' tensors, our names no rule took).
        """
        return self._convert(state, network, "hf")

    def _convert(self, state: StateDict, network: nn.Module, to: str) -> tuple[StateDict, list[str]]:
        """``state`` converted towards ``to`` (``ours`` or ``hf``), and the names no rule took."""
        raise NotImplementedError

    def tied_keys(self, network: nn.Module) -> set[str]:
        """Our names a checkpoint may leave out because they share storage with another (tied output embeddings)."""
        if getattr(network.llm.config.get_text_config(), "tie_word_embeddings", False):
            return {"llm.lm_head.weight"}
        return set()
