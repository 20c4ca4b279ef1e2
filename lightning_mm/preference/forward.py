"""The forward pass of a pair batch: the vision tower once per pair, its features spliced into both answers' rows."""

from __future__ import annotations

from typing import Any

import torch

from lightning_mm.models.attention_pattern import attention_masks
from lightning_mm.models.language import decoder_of
from lightning_mm.models.vlm import VisionLanguageModel, splice_image_features
from lightning_mm.preference.data import PAIRS_KEY

__all__ = ["pair_embeddings", "pair_hidden"]


def pair_embeddings(network: VisionLanguageModel, batch: dict[str, Any]) -> torch.Tensor:
    """(2P, T, D) input embeddings of a pair batch; the images of the P pairs go through tower and projector once.

    Rows ``[:P]`` (chosen) and ``[P:]`` (rejected) hold the same prompt, hence the same image tokens in the same
    order: the features of the P pairs are spliced into both halves.
    """
    ids = batch["input_ids"]  # (2P, T)
    pixels = batch.get("pixel_values")
    if pixels is None or pixels.shape[0] == 0:  # text-only pairs: the network's own path (dummy image in training)
        return network.embed(ids)
    pairs = int(batch[PAIRS_KEY])
    if ids.shape[0] != 2 * pairs:
        raise ValueError(f"A batch of {pairs} pairs has {ids.shape[0]} rows, not {2 * pairs}")
    image_mask = ids == network.image_token_id  # (2P, T)
    embeds = network.llm.get_input_embeddings()(ids.masked_fill(image_mask, 0))  # (2P, T, D)
    if pixels.is_floating_point():
        pixels = pixels.to(network.vision_dtype)
    features = network.encode_images(pixels, batch.get("image_sizes"), batch.get("tiles_per_image"))  # (N, L, D)
    both = torch.cat([features, features])  # (2N, L, D): chosen rows' images, then the rejected rows'
    return splice_image_features(embeds, ids, both, network.image_token_id)  # (2P, T, D)


def pair_hidden(network: VisionLanguageModel, batch: dict[str, Any]) -> torch.Tensor:
    """(2P, T, H) final hidden states of a pair batch (as :meth:`VisionLanguageModel.forward` on it, tower once)."""
    ids, mask = batch["input_ids"], batch.get("attention_mask")  # (2P, T)
    embeds = pair_embeddings(network, batch)  # (2P, T, D)
    prefix = (batch["labels"] != -100).cumsum(dim=1) == 0  # (2P, T) prefix-LM: everything before the answer
    blocks = network.attention_pattern.block_ids(ids, network.image_token_id, prefix)  # (2P, T) or None
    if blocks is not None:
        mask = attention_masks(network.llm.config, embeds, mask, None, blocks)
    out = decoder_of(network.llm)(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
    return out.last_hidden_state  # (2P, T, H)
