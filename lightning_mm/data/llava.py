"""LLaVA-format conversation files as a map-style dataset.

Records are read and validated once, when the dataset is built (JSON, roles, turn order, ``<image>`` count against
the images), and kept as compact JSON bytes in one numpy buffer, so DataLoader workers share them without copying.
Tokenization and image decoding happen lazily in ``__getitem__``; ``input_ids`` and ``labels`` come from the same
chat-template segments, and anything that does not add up raises an error that names the file, line and record id.

With ``on_bad_sample="skip"`` a bad record is skipped and counted by reason instead, once per record and epoch:
records that fail validation are left out when the dataset is built (:attr:`LlavaDataset.skip_counts`); a record that
fails while loading (an image that cannot be read) yields a dropped-record marker instead of a sample (no neighbour
stands in for it, so every good record is delivered exactly once per epoch), which the collator leaves out of the
batch while passing its reason on (batch key ``skipped``), where
:class:`~lightning_mm.callbacks.data_stats.DataStatsCallback` counts it. Samples too long for ``max_length`` whose
cut would fall inside an image span (or leave no supervised token) are always dropped this way.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from lightning_mm.data.chat_template import ChatTemplate, get_template
from lightning_mm.data.collate import SKIPPED_KEY
from lightning_mm.data.image_decode import image_size
from lightning_mm.data.image_paths import ImageFolder
from lightning_mm.data.images import ImageLoadError, ImageProcessor
from lightning_mm.data.layout import FixedLayout, ImageLayout, PreparedImage, resolve_layout, sample_layout
from lightning_mm.data.llava_records import (
    BAD_INPUT_REASONS,
    DROP_REASONS,
    BadSampleError,
    SampleDropped,
    evaluation_fields,
    parse_record,
    read_records,
)
from lightning_mm.data.sample_checks import check_image_tokens, truncate
from lightning_mm.data.segments import (
    IMAGE_PLACEHOLDER,
    Encoded,
    Message,
    count_placeholders,
    encode_conversation,
)

__all__ = [
    "BAD_INPUT_REASONS",
    "DROP_REASONS",
    "SKIPPED_KEY",
    "BadSampleError",
    "LlavaDataset",
    "SampleDropped",
    "parse_record",
    "read_records",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- dataset
def _long_tensor(values: list[int]) -> torch.Tensor:
    """(n,) int64 tensor of a list of ints (through numpy: a third of ``torch.tensor``'s time on token lists)."""
    return torch.from_numpy(np.array(values, dtype=np.int64))


class LlavaDataset(Dataset):
    """LLaVA-format conversations (``.json`` list or ``.jsonl``), tokenized with a chat template.

    ``__getitem__`` returns ``id``, ``input_ids`` (T,) long, ``labels`` (T,) long (-100 where not supervised),
    ``pixel_values`` (n_tiles, 3, H, W) uint8 (see :class:`~lightning_mm.data.ImageProcessor`; the vision tower
    normalises them), ``image_sizes`` (n_images, 2) long (original height, width) and ``tiles_per_image``
    (n_images,) long, all three None for text-only records, ``answers`` and ``category`` (the record's optional fields of
    those names, else None: reference answers of the last question, e.g. VQAv2's ten human answers, and a group to
    report metrics by) and ``skipped`` (an empty list). A record dropped while loading (``on_bad_sample="skip"``, or
    too long for ``max_length``) returns ``{"id": ..., "skipped": [reason]}`` instead, without ``input_ids``:
    :class:`~lightning_mm.data.VLMCollator` leaves it out of the batch and passes its reason on. With
    ``generation=True`` it returns the prompt up to the last answer (no ``labels``), that answer as ``answer`` and
    the image paths as ``images``.

    Each ``<image>`` becomes the ids the ``layout`` gives an image of its size (image tokens and any marker ids, all
    labelled -100), and its tiles come from the same layout.

    Args:
        data_path: One file or several (``.json`` list or ``.jsonl``).
        image_folder: Folder the records' image paths are relative to (None: each data file's folder). Image paths
            must stay inside it: an absolute path, a ``..`` that leaves it, or a symbolic link that points out of
            it is bad input (``image_outside_folder``) unless ``allow_images_outside_folder``.
        tokenizer: The LM's tokenizer.
        template: Chat template name (``plain``, ``vicuna_v1``, ``llama3``, ``chatml``, ``tokenizer``) or instance.
        num_image_tokens: Tokens one image becomes after the vision tower and projector (for the default layout).
        image_data_config: timm data config of the tower (required when a record has images and no layout is given).
        image_token_id: Id of the image token (None: the id of ``<image>`` in the tokenizer).
        image_aspect: ``pad``, ``resize`` or ``crop`` (see :data:`~lightning_mm.data.images.ASPECT_MODES`).
        max_length: Longest sample in tokens (image tokens included); longer ones are cut at the end, or dropped
            when the cut would fall inside an image span or leave no supervised token. None: no limit.
        on_bad_sample: ``error`` (raise, naming file, line and id) or ``skip`` (skip and count by reason).
        generation: Render prompts for generation (``predict``) instead of training samples.
        template_kwargs: Constructor arguments of the template (e.g. ``system_prompt``).
        max_consecutive_drops: Give up (raise) after this many dropped records in a row (in one process).
        layout: How images become tiles and prompt ids (None: a :class:`~lightning_mm.data.FixedLayout` of
            ``num_image_tokens`` tokens, the image resized to ``image_data_config`` with ``image_aspect``).
        allow_images_outside_folder: Accept image paths anywhere (absolute, ``..``, links out of the folder).
    """

    def __init__(
        self,
        data_path: str | Sequence[str],
        image_folder: str | None,
        tokenizer: PreTrainedTokenizerBase,
        template: str | ChatTemplate,
        num_image_tokens: int | None,
        image_data_config: dict[str, Any] | None = None,
        image_token_id: int | None = None,
        image_aspect: str = "pad",
        max_length: int | None = 2048,
        on_bad_sample: str = "error",
        generation: bool = False,
        template_kwargs: dict[str, Any] | None = None,
        max_consecutive_drops: int = 100,
        layout: ImageLayout | None = None,
        allow_images_outside_folder: bool = False,
    ) -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.files = [str(data_path)] if isinstance(data_path, (str, os.PathLike)) else [str(p) for p in data_path]
        self.image_folder = None if image_folder is None else str(image_folder)
        self.allow_images_outside_folder = bool(allow_images_outside_folder)
        self._folders: dict[str, ImageFolder] = {}  # image root -> its checks (one per data file without a folder)
        self.tokenizer = tokenizer
        self.template = get_template(template, **(template_kwargs or {}))
        self.template.check_tokenizer(tokenizer)
        self.num_image_tokens = None if num_image_tokens is None else int(num_image_tokens)
        if image_token_id is None:
            image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
            if image_token_id is None or image_token_id == tokenizer.unk_token_id:
                raise ValueError(f"The tokenizer has no {IMAGE_PLACEHOLDER} token: pass image_token_id.")
        self.image_token_id = int(image_token_id)
        images = ImageProcessor(image_data_config, image_aspect) if image_data_config is not None else None
        layout = resolve_layout(layout, self.num_image_tokens, self.image_token_id, images)
        if layout is None:
            raise ValueError("LlavaDataset needs num_image_tokens or a layout.")
        self.layout = layout
        self._can_prepare = not isinstance(layout, FixedLayout) or layout.processor is not None
        self.max_length = max_length
        self.on_bad_sample = on_bad_sample
        self.generation = generation
        self.max_consecutive_drops = max_consecutive_drops
        self.skip_counts: Counter[str] = Counter()  # bad records left out when reading the files
        self._warned: set[str] = set()
        self._lengths: np.ndarray | None = None
        self._drops_in_a_row = 0
        self._load()

    # ------------------------------------------------------------------ reading the files once
    def _load(self) -> None:
        payloads: list[bytes] = []
        files, lines, n_images, chars, n_turns, system = [], [], [], [], [], []
        first_skips: list[str] = []
        self.num_records = 0
        for fi, path in enumerate(self.files):
            for line, raw in read_records(path):
                self.num_records += 1
                try:
                    if isinstance(raw, BadSampleError):
                        raise raw
                    rid, images, messages = parse_record(raw, f"{path}:{line}")
                    extra = evaluation_fields(raw, f"{path}:{line}: record {rid!r}")
                    for image in images:
                        self._folder(fi).check_path(image, f"{path}:{line}: record {rid!r}")
                except BadSampleError as e:
                    if self.on_bad_sample == "error":
                        raise
                    self.skip_counts[e.reason] += 1
                    if len(first_skips) < 5:
                        first_skips.append(str(e))
                    continue
                if images and not self._can_prepare:
                    raise ValueError(f"{path}:{line}: record {rid!r} has images but no image_data_config was given")
                turns = [[m["role"], m["content"]] for m in messages]
                payloads.append(json.dumps([rid, images, turns, extra], ensure_ascii=False).encode())
                files.append(fi)
                lines.append(line)
                n_images.append(len(images))
                n_turns.append(len(turns))
                system.append(messages[0]["role"] == "system")
                chars.append(sum(len(t[1]) for t in turns) - len(images) * len(IMAGE_PLACEHOLDER))
        sizes = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=len(payloads))
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])  # (N + 1,)
        self._payload = np.frombuffer(b"".join(payloads), dtype=np.uint8)  # all records, JSON bytes
        self._file_index = np.asarray(files, dtype=np.int32)  # (N,)
        self._lines = np.asarray(lines, dtype=np.int64)  # (N,)
        self.num_images = np.asarray(n_images, dtype=np.int32)  # (N,)
        self.text_chars = np.asarray(chars, dtype=np.int64)  # (N,)
        self.num_turns = np.asarray(n_turns, dtype=np.int32)  # (N,)
        self.has_system = np.asarray(system, dtype=bool)  # (N,)
        if self.skip_counts:
            counts = ", ".join(f"{k}={v}" for k, v in sorted(self.skip_counts.items()))
            log.warning(
                "Skipped %d of %d records in %s (%s); first: %s",
                sum(self.skip_counts.values()),
                self.num_records,
                ", ".join(self.files),
                counts,
                " | ".join(first_skips),
            )
        if not payloads:
            raise ValueError(f"No usable record in {', '.join(self.files)} (skipped: {dict(self.skip_counts)})")

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _folder(self, file_index: int) -> ImageFolder:
        """The folder the image paths of data file ``file_index`` are relative to, with its checks."""
        root = self.image_folder or os.path.dirname(self.files[file_index])
        if root not in self._folders:
            self._folders[root] = ImageFolder(root, allow_outside=self.allow_images_outside_folder)
        return self._folders[root]

    def images_folder(self, index: int) -> ImageFolder:
        """The folder the image paths of record ``index`` are read from, with its checks (a subclass reading records
        from elsewhere overrides it with :meth:`prepare_images`)."""
        return self._folder(int(self._file_index[index]))

    def where(self, index: int) -> str:
        """``file:line`` of record ``index``."""
        return f"{self.files[self._file_index[index]]}:{self._lines[index]}"

    def record(self, index: int) -> dict[str, Any]:
        """The validated record ``index``: ``id``, ``images`` (resolved paths), ``messages``, ``where``, ``answers``,
        ``category``."""
        rid, images, turns, extra = json.loads(self._payload[self._offsets[index] : self._offsets[index + 1]].tobytes())
        folder = self._folder(int(self._file_index[index])).root
        return {
            "id": rid,
            "images": [os.path.join(folder, p) for p in images],
            "messages": [{"role": r, "content": c} for r, c in turns],
            "where": self.where(index),
            **extra,
        }

    # ------------------------------------------------------------------ tokenization
    def encode(
        self, messages: Sequence[Message], image_prompts: Sequence[Sequence[int]] | None = None
    ) -> tuple[Encoded, str | None]:
        """(encoded conversation, answer) of one conversation, before truncation.

        Args:
            messages: The conversation.
            image_prompts: The ids of each image (see :meth:`~lightning_mm.data.ImageLayout.prompt_ids`), in order
                (None: a :class:`~lightning_mm.data.FixedLayout`'s prompt for every image).

        In generation mode the final answer is left out of the prompt and returned as ``answer``.
        """
        answer = None
        if self.generation:
            answer = messages[-1]["content"]
            messages = messages[:-1]
        segs = self.template.render(messages, add_generation_prompt=self.generation, tokenizer=self.tokenizer)
        if image_prompts is None:
            if not isinstance(self.layout, FixedLayout):
                raise ValueError("LlavaDataset.encode: pass image_prompts (the layout's prompt depends on the size).")
            image_prompts = [self.layout.prompt_ids((0, 0))] * count_placeholders(segs)
        return encode_conversation(segs, self.tokenizer, image_prompts), answer

    def image_tokens(self, index: int) -> int:
        """Prompt ids of the images of record ``index`` (markers included), from each image's upright size in its
        header (an image that cannot be read, or lies outside the image folder, counts 0 here; loading it fails
        later, naming the record)."""
        if isinstance(self.layout, FixedLayout):  # the count does not depend on the size: no file to open
            return int(self.num_images[index]) * len(self.layout.prompt_ids((0, 0)))
        total = 0
        paths = self.record(index)["images"]
        folder = self.images_folder(index)
        layout = sample_layout(self.layout, len(paths))
        for path in paths:
            size = image_size(path) if folder.resolves_inside(path) else None
            if size is not None:
                total += len(layout.prompt_ids(size))
        return total

    @property
    def lengths(self) -> np.ndarray:
        """(N,) estimated token lengths (text + image prompt ids), for length-grouped sampling; no full tokenization.

        Text tokens are estimated as ``a + b * characters + c * turns + d * has_system_turn``, fitted on up to 64
        records tokenized for real (``a`` holds the template's fixed text, such as a default system prompt); the
        image part is what the layout gives each image of its size (see :meth:`image_tokens`).
        """
        if self._lengths is None:
            probe = np.unique(np.linspace(0, len(self) - 1, num=min(64, len(self))).astype(np.int64))
            cols = [np.ones(len(self)), self.text_chars, self.num_turns, self.has_system]
            feats = np.stack(cols, axis=1).astype(np.float64)  # (N, 4)
            tokens = []
            for i in probe:  # one id per image: the text tokens are the rest
                enc, _ = self.encode(self.record(int(i))["messages"], [[self.image_token_id]] * int(self.num_images[i]))
                tokens.append(len(enc.input_ids) - len(enc.image_spans))
            coef = np.linalg.lstsq(feats[probe], np.asarray(tokens, dtype=np.float64), rcond=None)[0]  # (4,)
            text = np.maximum(np.rint(feats @ coef), 1).astype(np.int64)  # (N,)
            images = np.fromiter((self.image_tokens(i) for i in range(len(self))), dtype=np.int64, count=len(self))
            self._lengths = text + images  # (N,)
        return self._lengths

    @property
    def has_images(self) -> np.ndarray:
        """(N,) bool: whether each record has at least one image."""
        return self.num_images > 0

    # ------------------------------------------------------------------ samples
    def prepare_images(
        self, layout: ImageLayout, paths: list[str], at: str, folder: ImageFolder | None
    ) -> list[PreparedImage]:
        """The images of one record (``paths`` inside ``folder``), prepared by ``layout``; a bad image is a
        :class:`BadSampleError` naming ``at``."""
        for p in paths:
            if folder is not None and not folder.resolves_inside(p):
                raise BadSampleError(
                    "image_outside_folder",
                    f"{at}: image {p!r} resolves to {os.path.realpath(p)!r}, outside the image folder "
                    f"{folder.root!r} (a symbolic link; set allow_images_outside_folder to accept it)",
                )
        try:
            return [layout.prepare(ImageProcessor.load(p)) for p in paths]
        except ImageLoadError as e:
            raise BadSampleError(e.reason, f"{at}: {e}") from e

    def build(self, index: int) -> dict[str, Any]:
        """Sample ``index``; raises :class:`BadSampleError` or :class:`SampleDropped` instead of replacing it."""
        rec = self.record(index)
        at = f"{rec['where']}: record {rec['id']!r}"
        layout = sample_layout(self.layout, len(rec["images"]))  # a layout may read multi-image samples differently
        images = self.prepare_images(layout, rec["images"], at, self.images_folder(index))
        prompts = [layout.prompt_ids(im.size) for im in images]
        try:
            enc, answer = self.encode(rec["messages"], prompts)
        except ValueError as e:  # the rendered conversation holds another number of placeholders
            raise BadSampleError("image_count_mismatch", f"{at}: {e}") from e
        check_image_tokens(enc, prompts, self.image_token_id, at)
        ids, labels = truncate(enc, self.max_length, self.generation, at)
        sample = {
            "id": rec["id"],
            "input_ids": _long_tensor(ids),  # (T,)
            "pixel_values": torch.cat([im.tiles for im in images]) if images else None,  # (n_tiles, 3, H, W)
            "image_sizes": torch.tensor([im.size for im in images], dtype=torch.long) if images else None,  # (n, 2)
            "tiles_per_image": torch.tensor([len(im.tiles) for im in images], dtype=torch.long) if images else None,
            "answers": rec["answers"],
            "category": rec["category"],
        }
        if self.generation:
            sample["answer"] = answer
            sample["images"] = rec["images"]  # resolved paths, for the prediction rows
        else:
            sample["labels"] = _long_tensor(labels)  # (T,)
        return sample

    def _note(self, err: Exception) -> None:
        reason = getattr(err, "reason", "")
        if reason not in self._warned:  # once per reason and process; totals are logged per epoch
            self._warned.add(reason)
            log.warning("Dropping sample (%s): %s", reason, err)
        else:
            log.debug("Dropping sample (%s): %s", reason, err)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        try:
            sample = self.build(index)
        except SampleDropped as e:
            err = e
        except BadSampleError as e:
            if self.on_bad_sample == "error":
                raise
            err = e
        else:
            self._drops_in_a_row = 0
            sample[SKIPPED_KEY] = []
            return sample
        self._note(err)
        self._drops_in_a_row += 1
        if self._drops_in_a_row >= self.max_consecutive_drops:
            raise RuntimeError(
                f"{self._drops_in_a_row} records in a row were dropped, up to index {index} ({self.where(index)}); "
                f"last: {err}. Check max_length and the data."
            )
        return {"id": self.record_id(index), SKIPPED_KEY: [err.reason]}

    def record_id(self, index: int) -> str:
        """The id of record ``index``."""
        rid = json.loads(self._payload[self._offsets[index] : self._offsets[index + 1]].tobytes())[0]
        return rid
