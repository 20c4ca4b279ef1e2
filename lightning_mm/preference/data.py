"""Preference pairs: one prompt and its images, two final answers (chosen, rejected), and their collation.

A pair sample holds the images once (``pixel_values`` ...) and two label sets over the same prompt: ``chosen_input_ids``
/ ``chosen_labels`` and ``rejected_input_ids`` / ``rejected_labels``, where only the final answer (and its end-of-turn
token) is labelled. :class:`PreferenceCollator` stacks the chosen rows then the rejected rows into one (2P, T) batch
whose ``pixel_values`` hold each pair's images once: the module runs the vision tower once per pair and splices the
same features into both rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import get_worker_info

from lightning_mm.data.collate import EMPTY_KEY, SKIPPED_KEY, VLMCollator, WorkerBatch
from lightning_mm.data.segments import IGNORE_INDEX

__all__ = ["PAIRS_KEY", "PreferenceCollator", "make_pair", "prompt_length"]

#: Batch key: the number of pairs P; rows ``[:P]`` are the chosen answers, rows ``[P:]`` the rejected ones.
PAIRS_KEY = "pairs"
_IMAGE_KEYS = ("pixel_values", "image_sizes", "tiles_per_image")


def prompt_length(labels: Sequence[int]) -> int:
    """Start of the final answer: the position of the first label of the last run of supervised labels."""
    end = max((i for i, x in enumerate(labels) if x != IGNORE_INDEX), default=-1)
    if end < 0:
        return len(labels)
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return start


def _final_answer_only(labels: list[int]) -> list[int]:
    """``labels`` with every target before the final answer (earlier assistant turns) set to -100."""
    start = prompt_length(labels)
    return [IGNORE_INDEX] * start + list(labels[start:])


def make_pair(
    sample_id: Any,
    chosen: tuple[Sequence[int], Sequence[int]],
    rejected: tuple[Sequence[int], Sequence[int]],
    max_length: int | None = None,
    images: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pair sample from the encoded (input_ids, labels) of the conversation ending with each answer.

    Only the final answer is scored (earlier assistant turns become -100). Both rows are cut to ``max_length``.

    Args:
        sample_id: The record's id (named in errors).
        chosen: (input_ids, labels) of the prompt followed by the chosen answer.
        rejected: The same with the rejected answer.
        max_length: Token budget of each row (None: no cut).
        images: ``pixel_values`` (n_tiles, 3, H, W) and optionally ``image_sizes`` / ``tiles_per_image``, shared.

    Raises:
        ValueError: Naming the sample when the prompts differ, or an answer is empty (after the cut).
    """
    rows = {}
    for name, (ids, labels) in (("chosen", chosen), ("rejected", rejected)):
        ids, labels = list(ids), _final_answer_only(list(labels))
        if len(ids) != len(labels):
            raise ValueError(f"Sample {sample_id!r}: the {name} input_ids and labels differ in length")
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        if all(x == IGNORE_INDEX for x in labels[1:]):
            cut = f" within max_length={max_length}" if max_length is not None else ""
            raise ValueError(f"Sample {sample_id!r}: the {name} answer is empty{cut}")
        rows[name] = (ids, labels)
    (c_ids, c_lab), (r_ids, r_lab) = rows["chosen"], rows["rejected"]
    c_start, r_start = prompt_length(c_lab), prompt_length(r_lab)
    if c_ids[:c_start] != r_ids[:r_start]:
        at = next((i for i, (a, b) in enumerate(zip(c_ids[:c_start], r_ids[:r_start], strict=False)) if a != b), None)
        where = f"at token {at}" if at is not None else f"in length ({c_start} vs {r_start} tokens)"
        raise ValueError(f"Sample {sample_id!r}: the chosen and rejected prompts differ {where}")
    pair = {
        "id": sample_id,
        "chosen_input_ids": torch.tensor(c_ids, dtype=torch.long),  # (T_c,)
        "chosen_labels": torch.tensor(c_lab, dtype=torch.long),  # (T_c,)
        "rejected_input_ids": torch.tensor(r_ids, dtype=torch.long),  # (T_r,)
        "rejected_labels": torch.tensor(r_lab, dtype=torch.long),  # (T_r,)
    }
    pair.update({k: v for k, v in (images or {}).items() if v is not None})
    return pair


class PreferenceCollator:
    """Collates pair samples into one (2P, T) batch: chosen rows, then rejected rows, images once.

    The chosen rows are collated by a :class:`~lightning_mm.data.VLMCollator` with the pair's images (the per-sample
    image-token check runs there); the rejected rows share the prompt, hence the images. Keys: ``input_ids``,
    ``labels``, ``attention_mask`` (2P, T), ``pixel_values`` / ``image_sizes`` / ``tiles_per_image`` of the P pairs,
    ``pairs`` (P), ``id`` (P), and whatever other per-pair fields the samples carry. Records dropped in skip mode
    (``skipped``) are left out as the base collator does.

    Args:
        base: The collator of single samples (right padding) whose settings are used.
    """

    def __init__(self, base: VLMCollator) -> None:
        if base.padding_side != "right":
            raise ValueError("PreferenceCollator pads on the right (training and teacher-forced evaluation)")
        self.base = base
        self.text = VLMCollator(base.pad_token_id, "right", pad_to_multiple_of=base.pad_to_multiple_of)

    def _half(self, samples: Sequence[dict[str, Any]], name: str, images: bool) -> dict[str, Any]:
        rows = []
        for s in samples:
            row = {"id": s["id"], "input_ids": s[f"{name}_input_ids"], "labels": s[f"{name}_labels"]}
            if images:
                row.update({k: s[k] for k in _IMAGE_KEYS if s.get(k) is not None})
            rows.append(row)
        return (self.base if images else self.text)(rows)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        skipped = [r for s in samples for r in (s.get(SKIPPED_KEY) or ())]
        samples = [s for s in samples if "chosen_input_ids" in s]
        if not samples:
            batch = self.base._empty(True)
            batch.update({PAIRS_KEY: 0, "id": [], SKIPPED_KEY: skipped})
            return WorkerBatch(batch) if get_worker_info() is not None else batch
        chosen = self._half(samples, "chosen", images=True)
        rejected = self._half(samples, "rejected", images=False)
        batch: dict[str, Any] = {k: chosen.get(k) for k in (*_IMAGE_KEYS, "image_counts")}
        for key, pad in (("input_ids", self.base.pad_token_id), ("labels", IGNORE_INDEX), ("attention_mask", 0)):
            rows = [*chosen[key], *rejected[key]]  # 2P rows of two lengths
            batch[key] = pad_sequence(rows, batch_first=True, padding_value=pad)  # (2P, T)
        batch[PAIRS_KEY] = len(samples)
        batch["id"] = [s["id"] for s in samples]
        for key in samples[0]:
            if key not in batch and not key.startswith(("chosen_", "rejected_")) and key not in _IMAGE_KEYS:
                batch[key] = [s.get(key) for s in samples]
        if skipped:
            batch[SKIPPED_KEY] = skipped
        batch.setdefault(EMPTY_KEY, False)
        return WorkerBatch(batch) if get_worker_info() is not None else batch
