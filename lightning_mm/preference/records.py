"""Preference pairs from files: LLaVA-style conversations with ``chosen`` / ``rejected``, or TRL's columns.

Two record shapes are read, from a ``.json`` list or a ``.jsonl`` file:

* LLaVA-style: ``{"id", "image" | "images", "conversations": [... ending with a human turn], "chosen": str,
  "rejected": str}`` (``human``/``gpt`` or ``user``/``assistant`` roles);
* TRL's preference columns: ``{"prompt": str | [messages], "chosen": str | [one assistant message], "rejected": ...,
  "images": [paths]}`` (a string prompt is one user turn; ``id`` optional: the line is used).

Each record becomes a pair sample (:func:`~lightning_mm.preference.data.make_pair`): its images read once, the
conversation rendered twice with the model's chat template, once per answer. A bad record is an error naming the file,
line and id; with ``skip_bad_records`` it is left out and counted (the batch key ``skipped``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_mm.data.chat_template import get_template
from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.data.images import ImageProcessor
from lightning_mm.data.layout import ImageLayout, sample_layout
from lightning_mm.data.llava_records import read_records
from lightning_mm.data.segments import count_placeholders, encode_conversation
from lightning_mm.preference.data import PreferenceCollator, make_pair

__all__ = ["PreferenceDataModule", "PreferencePairDataset", "parse_pair_record"]

_ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}


def _answer(value: Any, at: str, key: str) -> str:
    if isinstance(value, list):  # TRL conversational: [{"role": "assistant", "content": ...}]
        if len(value) != 1 or not isinstance(value[0], dict) or "content" not in value[0]:
            raise ValueError(f"{at}: {key!r} must be a string or one assistant message")
        value = value[0]["content"]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{at}: {key!r} must be a non-empty string")
    return value


def parse_pair_record(raw: Any, where: str) -> tuple[str, list[str], list[dict[str, str]], str, str]:
    """``(id, image paths, prompt messages, chosen, rejected)`` of one record of either shape.

    Raises:
        ValueError: naming ``where`` and the record's id when a field is missing or malformed.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a record must be a JSON object")
    rid = str(raw.get("id", where))
    at = f"{where}: record {rid!r}"
    if "conversations" in raw:
        turns = raw["conversations"]
        images = raw.get("images", [raw["image"]] if raw.get("image") else [])
        messages = []
        for turn in turns if isinstance(turns, list) else []:
            role = _ROLES.get(turn.get("from", turn.get("role")) if isinstance(turn, dict) else None)
            if role is None:
                raise ValueError(f"{at}: a turn of 'conversations' has no known role (human / gpt)")
            messages.append({"role": role, "content": str(turn.get("value", turn.get("content", "")))})
    elif "prompt" in raw:
        prompt = raw["prompt"]
        images = raw.get("images") or ([raw["image"]] if raw.get("image") else [])
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [{"role": _ROLES.get(m.get("role"), "user"), "content": str(m.get("content"))} for m in prompt]
    else:
        raise ValueError(f"{at}: neither 'conversations' (LLaVA-style) nor 'prompt' (TRL columns)")
    if not messages or messages[-1]["role"] != "user":
        raise ValueError(f"{at}: the prompt must end with a user turn (the answers are 'chosen' and 'rejected')")
    if isinstance(images, str):
        images = [images]
    return (
        rid,
        list(images),
        messages,
        _answer(raw.get("chosen"), at, "chosen"),
        _answer(raw.get("rejected"), at, "rejected"),
    )


class PreferencePairDataset(Dataset):
    """Pair samples from a LLaVA-style or TRL-column preference file.

    Args:
        path: ``.json`` (a list of records) or ``.jsonl``.
        tokenizer: The model's tokenizer.
        layout: The model's image layout (with its image processor).
        template: Chat template name.
        image_folder: Folder the image paths are relative to.
        max_length: Token budget of each row (None: no cut).
        skip_bad_records: Leave out a bad record (counted in the batch key ``skipped``) instead of raising.
    """

    def __init__(
        self,
        path: str,
        tokenizer,
        layout: ImageLayout,
        template: str = "chatml",
        image_folder: str = "",
        max_length: int | None = None,
        skip_bad_records: bool = False,
    ) -> None:
        self.path = path
        self.tokenizer = tokenizer
        self.layout = layout
        self.template = get_template(template)
        self.image_folder = image_folder
        self.max_length = max_length
        self.skip_bad_records = skip_bad_records
        self.records = list(read_records(path))  # (line, record or BadSampleError)

    def __len__(self) -> int:
        return len(self.records)

    def _encode(self, messages: list[dict[str, str]], answer: str, prompts: list[list[int]]):
        segs = self.template.render([*messages, {"role": "assistant", "content": answer}], tokenizer=self.tokenizer)
        if count_placeholders(segs) != len(prompts):
            raise ValueError(f"{count_placeholders(segs)} <image> placeholder(s) for {len(prompts)} image(s)")
        enc = encode_conversation(segs, self.tokenizer, prompts)
        return enc.input_ids, enc.labels

    def build(self, index: int) -> dict[str, Any]:
        """Pair ``index``; raises ``ValueError`` naming the file, line and record."""
        line, raw = self.records[index]
        if isinstance(raw, Exception):
            raise raw
        rid, paths, messages, chosen, rejected = parse_pair_record(raw, f"{self.path}:{line}")
        at = f"{self.path}:{line}: record {rid!r}"
        layout = sample_layout(self.layout, len(paths))
        images = [layout.prepare(ImageProcessor.load(os.path.join(self.image_folder, p))) for p in paths]
        prompts = [layout.prompt_ids(im.size) for im in images]
        try:
            pixels = {
                "pixel_values": torch.cat([im.tiles for im in images]) if images else None,  # (n_tiles, 3, H, W)
                "image_sizes": torch.tensor([im.size for im in images], dtype=torch.long) if images else None,
                "tiles_per_image": torch.tensor([len(im.tiles) for im in images], dtype=torch.long) if images else None,
            }
            return make_pair(
                at,
                self._encode(messages, chosen, prompts),
                self._encode(messages, rejected, prompts),
                self.max_length,
                pixels,
            )
        except ValueError as e:
            raise ValueError(f"{at}: {e}" if not str(e).startswith("Sample") else str(e)) from e

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.build(index)
        except (ValueError, OSError) as e:
            if not self.skip_bad_records:
                raise
            return {"id": f"{self.path}:{self.records[index][0]}", "skipped": [str(e)]}


class PreferenceDataModule(VLMDataModule):
    """Preference pairs from LLaVA-style or TRL-column files (:class:`PreferencePairDataset`), bound to the model.

    Args:
        train_path: Training pairs (``.json`` or ``.jsonl``).
        val_path: Held-out pairs (None: no validation).
        image_folder: Folder the image paths are relative to.
        template: Chat template name (None: the model's).
        max_length: Token budget of each row (None: no cut).
        skip_bad_records: Leave out bad records (counted in the batch key ``skipped``) instead of raising.
        batch_size: Pairs per micro-batch (each pair is two rows).
        num_workers: DataLoader worker processes.
        seed: Seed of the training order.
    """

    def __init__(
        self,
        train_path: str,
        val_path: str | None = None,
        image_folder: str = "",
        template: str | None = None,
        max_length: int | None = None,
        skip_bad_records: bool = False,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.train_path, self.val_path, self.image_folder = train_path, val_path, image_folder
        self.template, self.max_length, self.skip_bad_records = template, max_length, skip_bad_records

    def dataset(self, path: str) -> PreferencePairDataset:
        """The pairs of ``path`` for the bound model."""
        return PreferencePairDataset(
            path,
            self.tokenizer,
            self.layout,
            template=self.template or self.contract.template.name,
            image_folder=self.image_folder,
            max_length=self.max_length,
            skip_bad_records=self.skip_bad_records,
        )

    def collator(self, padding_side: str = "right") -> PreferenceCollator:
        """Pairs collated as 2P rows, images once (:class:`~lightning_mm.preference.PreferenceCollator`)."""
        return PreferenceCollator(super().collator(padding_side))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.train_path), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.val_path), shuffle=False) if self.val_path else []
