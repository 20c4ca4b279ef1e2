"""Generation-based evaluation: prompts from teacher-forcing batches, batched greedy answers, their references.

A validation batch is right-padded for teacher forcing (``input_ids``, ``labels``). The question of a sample is
everything before its *last answer*: the last run of supervised labels (the answer and its end-of-turn token), so a
multi-turn conversation keeps its earlier answers in the prompt. The prompts are re-padded on the left and answered
with the network's KV-cached ``generate``; generation stops at the chat template's end-of-turn (or EOS). With
several ranks, every rank must call :func:`generate_last_answers` together (decoding steps are kept in step, as a
sharded network needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from lightning_mm.data.templates import IGNORE_INDEX
from lightning_mm.models import VisionLanguageModel

__all__ = [
    "GeneratedAnswers",
    "generate_last_answers",
    "last_answer_spans",
    "left_pad_prompts",
    "sample_images",
    "until_stop",
]


def last_answer_spans(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each sample's last answer starts and ends.

    Args:
        labels: (B, T) unshifted labels (the token id where supervised, -100 elsewhere).

    Returns:
        ``start`` (B,): first position of the last run of supervised labels (the prompt is ``[:start]``); ``end``
        (B,): one past its last position; ``has_answer`` (B,) bool (False: no supervised label, start = end = 0).
    """
    sup = labels != IGNORE_INDEX  # (B, T)
    before = torch.nn.functional.pad(sup[:, :-1], (1, 0), value=False)  # (B, T): supervised one position earlier
    pos = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)  # (B, T)
    run_start = sup & ~before  # (B, T)
    zero = torch.zeros_like(pos)
    start = torch.where(run_start, pos, zero).amax(dim=1)  # (B,)
    end = torch.where(sup, pos + 1, zero).amax(dim=1)  # (B,)
    return start, end, sup.any(dim=1)


def left_pad_prompts(
    input_ids: torch.Tensor, lengths: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts ``input_ids[b, :lengths[b]]`` and their attention mask.

    Args:
        input_ids: (B, T) right-padded token ids.
        lengths: (B,) prompt lengths.
        pad_token_id: Id written into the padding.

    Returns:
        ``(ids, mask)``, both (B, P) with P = max(lengths).
    """
    width = int(lengths.max()) if lengths.numel() else 0
    pos = torch.arange(width, device=input_ids.device)  # (P,)
    offset = (width - lengths).unsqueeze(1)  # (B, 1): padding before each prompt
    mask = pos.unsqueeze(0) >= offset  # (B, P)
    src = (pos.unsqueeze(0) - offset).clamp(min=0)  # (B, P): source column of each prompt position
    ids = input_ids[:, :width].gather(1, src) if width else input_ids[:, :0]
    return ids.masked_fill(~mask, pad_token_id), mask.long()


def until_stop(tokens: Sequence[int], stop_token_ids: Sequence[int]) -> list[int]:
    """``tokens`` up to (not including) the first stop token."""
    out = []
    for t in tokens:
        if t in stop_token_ids:
            break
        out.append(t)
    return out


class GeneratedAnswers(dict):
    """Answers generated for a batch: ``rows`` (batch indices answered), ``prompt_ids`` (list of token lists),
    ``predictions`` (texts), ``generated_ids`` (token lists, up to the stop token), ``target_ids`` and ``targets``
    (the batch's own last answers, tokens and text) and ``references`` (per row: the batch's ``answers`` when given,
    else ``[target]``)."""


def sample_images(
    batch: dict[str, Any], rows: torch.Tensor | Sequence[int]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``pixel_values``, ``image_sizes`` and ``tiles_per_image`` of the samples ``rows`` of a collated batch.

    Images are selected by ``image_counts`` (images per sample) and their tiles by ``tiles_per_image`` (one tile per
    image when the batch has no such key), so a sample keeps all the tiles of each of its images.

    Returns:
        ((N_tiles', 3, H, W), (N_images', 2) or None, (N_images',) or None), or three Nones when the chosen samples
        have no image.
    """
    pixels = batch.get("pixel_values")
    if pixels is None:
        return None, None, None
    counts = batch["image_counts"].cpu()  # (B,)
    sizes, tiles = batch.get("image_sizes"), batch.get("tiles_per_image")
    per_tile = tiles.cpu() if tiles is not None else torch.ones(int(counts.sum()), dtype=torch.long)  # (N_img,)
    chosen = torch.zeros(len(counts), dtype=torch.bool).index_fill_(0, torch.as_tensor(rows, dtype=torch.long), True)
    image_mask = chosen.repeat_interleave(counts)  # (N_img,)
    if not image_mask.any():
        return None, None, None
    tile_mask = image_mask.repeat_interleave(per_tile)  # (N_tiles,)
    return (
        pixels[tile_mask.to(pixels.device)],  # (N_tiles', 3, H, W)
        sizes[image_mask.to(sizes.device)] if sizes is not None else None,  # (N_img', 2)
        tiles[image_mask.to(tiles.device)] if tiles is not None else None,  # (N_img',)
    )


@torch.no_grad()
def generate_last_answers(
    network: VisionLanguageModel,
    tokenizer: Any,
    batch: dict[str, Any],
    stop_token_ids: Sequence[int],
    max_new_tokens: int,
    rows: Sequence[int] | None = None,
) -> GeneratedAnswers:
    """Greedy answers to the last question of each sample of a right-padded, labelled batch.

    Args:
        network: The network (``generate`` with KV cache).
        tokenizer: The LM's tokenizer (decoding).
        batch: Collated batch with ``input_ids``, ``labels``, ``image_counts`` and ``pixel_values``; optional
            ``answers`` (per sample: a list of reference answers, or None).
        stop_token_ids: Ids that end an answer (end-of-turn, EOS).
        max_new_tokens: Generation budget.
        rows: Answer only these samples (default: every sample with a supervised answer).

    Returns:
        :class:`GeneratedAnswers` for the samples that have an answer to generate.
    """
    labels = batch["labels"]
    start, end, has_answer = last_answer_spans(labels)
    wanted = torch.zeros_like(has_answer)
    wanted[list(range(labels.shape[0])) if rows is None else list(rows)] = True
    keep = (wanted & has_answer).nonzero().flatten()  # (K,)
    fields = ("prompt_ids", "predictions", "generated_ids", "target_ids", "targets", "references")
    if not len(keep):
        return GeneratedAnswers(rows=[], **{f: [] for f in fields})
    ids, mask = left_pad_prompts(batch["input_ids"][keep], start[keep], tokenizer.pad_token_id)  # (K, P)
    pixels, sizes, tiles = sample_images(batch, keep)
    generated = network.generate(
        ids,
        mask,
        pixels,
        image_sizes=sizes,
        tiles_per_image=tiles,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(stop_token_ids),
        pad_token_id=tokenizer.pad_token_id,
        # sharded networks (FSDP1/2) need every rank in every decoding step, also after its own answers ended
        synced_gpus=dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1,
    )  # (K, T_new)
    gen_ids = [until_stop(g, stop_token_ids) for g in generated.tolist()]
    targets = [batch["input_ids"][b, start[b] : end[b]].tolist() for b in keep.tolist()]
    target_texts = [tokenizer.decode(until_stop(t, stop_token_ids), skip_special_tokens=True).strip() for t in targets]
    given = batch.get("answers") or [None] * labels.shape[0]
    return GeneratedAnswers(
        rows=keep.tolist(),
        prompt_ids=[ids[k][mask[k].bool()].tolist() for k in range(len(keep))],
        predictions=[tokenizer.decode(g, skip_special_tokens=True).strip() for g in gen_ids],
        generated_ids=gen_ids,
        target_ids=targets,
        targets=target_texts,
        references=[list(given[b]) if given[b] else [t] for b, t in zip(keep.tolist(), target_texts, strict=True)],
    )
