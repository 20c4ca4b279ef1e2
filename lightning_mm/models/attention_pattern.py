"""Attention patterns of the language model: which earlier *and later* positions a token may attend to.

A :class:`VisionLanguageModel` holds one :class:`AttentionPattern`, set by its family when the network is built:

* ``causal`` (LLaVA and most VLMs): every token attends to itself and the tokens before it;
* ``image_blocks``: causal, plus full attention among the tokens of one image (each run of consecutive
  image tokens is a block);
* ``prefix_lm``: full attention over the prefix (image tokens and prompt), causal over the answer. The
  data says where each sample's prefix ends (the batch key ``prefix_mask``, written by the collator from the labels:
  the prefix is every position before a sample's first supervised target); a prompt being generated from is all prefix.

The pattern is turned into a *block id* per position, transformers' ``block_sequence_ids``: -1 for a causal token,
``g >= 0`` for the tokens of block ``g``, which see each other whole. The masks are then built once per batch by
``transformers.masking_utils.create_masks_for_generate`` (the same functions transformers' own VLMs with
these patterns use), one per layer type of the LM (full and sliding-window layers), for whichever attention backend the LM runs.
Packed rows (``position_ids`` restarting per sample, no 2-D mask) keep their per-sample confinement: transformers
ANDs its packed-sequence mask after the block overlay, so no block reaches across samples. In generation the
prompt's masks are built for the prefill step only; the new tokens then attend causally to everything before them
(they belong to no block), through the KV cache.

A sliding-window layer gets ``OR(sliding-window causal, block)``: the same as
``AND(sliding window, OR(causal, block))`` whenever a block is shorter than the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PretrainedConfig
from transformers.masking_utils import create_masks_for_generate

__all__ = ["ATTENTION_PATTERNS", "CAUSAL", "AttentionPattern", "attention_masks", "image_block_ids", "prefix_block_ids"]

#: The patterns a network can have.
ATTENTION_PATTERNS = ("causal", "image_blocks", "prefix_lm")


def image_block_ids(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """(B, T) block ids: each run of consecutive image tokens is one block (0, 1, ... per row), -1 elsewhere.

    Args:
        input_ids: (B, T) token ids.
        image_token_id: Id of the image token.
    """
    is_image = input_ids == image_token_id  # (B, T)
    starts = is_image & ~F.pad(is_image, (1, 0))[:, :-1]  # (B, T) first token of each run
    groups = starts.long().cumsum(dim=1) - 1  # (B, T)
    return torch.where(is_image, groups, -1)


def prefix_block_ids(prefix_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) block ids of a prefix LM: block 0 over the prefix, -1 elsewhere.

    In a packed row every sample's prefix is block 0 too; the packed-sequence mask keeps the samples apart.

    Args:
        prefix_mask: (B, T) bool, True on the positions of the prefix.
    """
    return torch.where(prefix_mask.bool(), 0, -1)


def attention_masks(
    config: PretrainedConfig,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    block_ids: torch.Tensor,
    cache: Any = None,
) -> dict[str, torch.Tensor] | torch.Tensor:
    """The LM's attention masks with the blocks of ``block_ids``, built with transformers' mask functions.

    Args:
        config: The LM's config (its text config is read: layer types, sliding window, attention backend).
        inputs_embeds: (B, T, D) the decoder's input (batch size, length, dtype and device are read).
        attention_mask: (B, T_kv) 1 on real tokens, or None (packed rows: ``position_ids`` instead).
        position_ids: (B, T) positions, or None.
        block_ids: (B, T) -1 for a causal token, ``g >= 0`` for block ``g``.
        cache: The KV cache of a prefill step, or None.

    Returns:
        A mask per layer type (``{"full_attention": ..., "sliding_attention": ...}``) for LMs with several, else
        one mask; what the decoder takes as ``attention_mask``.

    Raises:
        ValueError: when transformers cannot build masks for one of the LM's layer types (the blocks would be lost).
    """
    masks = create_masks_for_generate(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        cache=cache,
        position_ids=position_ids,
        block_sequence_ids=block_ids,
    )
    if masks is attention_mask:  # transformers returns the 2-D mask as is for layer types it has no mask for
        kinds = sorted(set(getattr(config.get_text_config(), "layer_types", ()) or ()))
        raise ValueError(f"transformers builds no attention masks for layer types {kinds}; the blocks cannot apply.")
    return masks


@dataclass(frozen=True)
class AttentionPattern:
    """The attention pattern of a network's language model (see the module docstring).

    Attributes:
        kind: ``causal``, ``image_blocks`` or ``prefix_lm``.
    """

    kind: str = "causal"

    def __post_init__(self) -> None:
        if self.kind not in ATTENTION_PATTERNS:
            raise ValueError(f"Unknown attention pattern {self.kind!r}; one of {', '.join(ATTENTION_PATTERNS)}.")

    @property
    def is_causal(self) -> bool:
        """Whether the pattern is plain causal attention (the LM builds its own masks)."""
        return self.kind == "causal"

    @property
    def needs_prefix(self) -> bool:
        """Whether a training batch must say where each sample's prefix is (the batch key ``prefix_mask``)."""
        return self.kind == "prefix_lm"

    def block_ids(
        self, input_ids: torch.Tensor, image_token_id: int, prefix_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """(B, T) block ids of a batch; None for a causal pattern.

        Args:
            input_ids: (B, T) token ids.
            image_token_id: Id of the image token.
            prefix_mask: (B, T) True on each sample's prefix (``prefix_lm`` only).

        Raises:
            ValueError: for a ``prefix_lm`` batch without ``prefix_mask`` or of another shape.
        """
        if self.kind == "causal":
            return None
        if self.kind == "image_blocks":
            return image_block_ids(input_ids, image_token_id)
        if prefix_mask is None:
            raise ValueError(
                "A prefix-LM network needs the batch key `prefix_mask` (True on each sample's prefix); collate the "
                "data with `VLMCollator(prefix_lm=True)` (the data contract's attention_pattern says so)."
            )
        if prefix_mask.shape != input_ids.shape:
            raise ValueError(
                f"prefix_mask {tuple(prefix_mask.shape)} does not match input_ids {tuple(input_ids.shape)}."
            )
        return prefix_block_ids(prefix_mask.to(input_ids.device))


#: The pattern of every network whose family sets none.
CAUSAL = AttentionPattern("causal")
