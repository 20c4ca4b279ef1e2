"""Batch collation: padding by position, attention masks, image tiles and sizes, and a per-sample image-token check.

In a DataLoader worker the collated batch is handed back in a form that crosses to the main process cheaply: torch
would move every tensor into its own shared-memory file, and with its default ``file_descriptor`` sharing strategy the
main process then fetches each file's descriptor from the worker over a socket (a connection and a handshake per
tensor). The small tensors of a batch (ids, labels, masks, small images) travel as bytes inside the pickle instead;
only tensors over :data:`INLINE_TENSOR_BYTES` go through shared memory. The main process receives a plain ``dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import get_worker_info

from lightning_mm.data.layout import ImageLayout, image_token_counts, resolve_layout
from lightning_mm.data.segments import IGNORE_INDEX

__all__ = [
    "EMPTY_KEY",
    "INLINE_TENSOR_BYTES",
    "KEPT_KEY",
    "PREFIX_MASK_KEY",
    "SKIPPED_KEY",
    "VLMCollator",
    "WorkerBatch",
    "check_image_tokens",
    "sample_prefix_mask",
]

#: Batch key of a prefix LM's (B, T) prefix: True on the positions that see each other whole.
PREFIX_MASK_KEY = "prefix_mask"
_TENSOR_KEYS = ("input_ids", "labels", "pixel_values", "image_sizes", "tiles_per_image", PREFIX_MASK_KEY)

#: Sample key: reasons the record was dropped (a dropped record has no ``input_ids``); batch key: the reasons of the
#: records left out of this batch, one entry per record.
SKIPPED_KEY = "skipped"
#: Batch key, True on a batch whose every record was dropped: one padding token, nothing supervised, no sample.
EMPTY_KEY = "empty"
#: Batch key (with ``skipped``): the position of each sample of the batch among the records it was collated from.
KEPT_KEY = "kept"

#: Batch tensors up to this size leave a DataLoader worker as bytes inside the pickle, larger ones in shared memory.
INLINE_TENSOR_BYTES = 1 << 20


class _InlineTensor(NamedTuple):
    """A CPU tensor as raw bytes (a writable ``bytearray``, so the rebuilt tensor owns writable memory)."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    data: bytearray

    @classmethod
    def of(cls, t: torch.Tensor) -> _InlineTensor:
        raw = t.contiguous().reshape(-1).view(torch.uint8)  # (nbytes,)
        return cls(t.dtype, tuple(t.shape), bytearray(raw.numpy()))

    def tensor(self) -> torch.Tensor:
        if not self.data:
            return torch.empty(self.shape, dtype=self.dtype)
        return torch.frombuffer(self.data, dtype=self.dtype).view(self.shape)  # shares the bytearray's memory


def _inlinable(value: Any) -> bool:
    return (
        type(value) is torch.Tensor
        and value.device.type == "cpu"
        and not value.requires_grad
        and value.nbytes <= INLINE_TENSOR_BYTES
    )


def _rebuild_batch(items: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tensor() if isinstance(v, _InlineTensor) else v for k, v in items.items()}


class WorkerBatch(dict):
    """A collated batch on its way out of a DataLoader worker; it unpickles as a plain ``dict``.

    Top-level tensors of at most :data:`INLINE_TENSOR_BYTES` are pickled by value, larger ones as torch shares them.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_batch, ({k: _InlineTensor.of(v) if _inlinable(v) else v for k, v in self.items()},)


def _image_geometry(sample: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image_sizes (n, 2), tiles_per_image (n,)) of a sample; without those keys, one tile per image, of tile size."""
    tiles = sample.get("pixel_values")
    n_tiles = 0 if tiles is None else int(tiles.shape[0])
    sizes, per_image = sample.get("image_sizes"), sample.get("tiles_per_image")
    if per_image is None:
        per_image = torch.ones(n_tiles if sizes is None else len(sizes), dtype=torch.long)  # (n,)
    if sizes is None:
        hw = tuple(tiles.shape[-2:]) if n_tiles else (0, 0)
        sizes = torch.tensor([hw] * len(per_image), dtype=torch.long).reshape(-1, 2)  # (n, 2)
    if int(per_image.sum()) != n_tiles or len(sizes) != len(per_image):
        raise ValueError(
            f"Sample {sample.get('id', '?')!r}: {n_tiles} tile(s) in pixel_values for tiles_per_image "
            f"{per_image.tolist()} and {len(sizes)} image size(s)."
        )
    return torch.as_tensor(sizes, dtype=torch.long), torch.as_tensor(per_image, dtype=torch.long)


def check_image_tokens(name: Any, found: int, sizes: torch.Tensor, layout: ImageLayout, image_token_id: int) -> None:
    """Raise ``ValueError`` naming sample ``name`` unless its ``found`` image tokens are what ``layout`` gives its
    images of ``sizes`` (n, 2)."""
    per_image = image_token_counts(layout, sizes.tolist(), image_token_id)
    if found != sum(per_image):
        raise ValueError(
            f"Sample {name!r}: {found} image tokens but {len(per_image)} image(s) of {per_image} tokens "
            f"= {sum(per_image)} expected."
        )


def sample_prefix_mask(sample: dict[str, Any]) -> torch.Tensor:
    """(L,) the prefix of one sample for a prefix LM: every position before its first supervised target (all of a
    sample without labels: a prompt to generate from); a ``prefix_mask`` the sample carries is taken as is.

    Raises:
        ValueError: naming the sample when its targets come in several runs (a second prompt after an answer: a
            prefix LM has one prefix and one answer per sample).
    """
    if sample.get(PREFIX_MASK_KEY) is not None:
        return torch.as_tensor(sample[PREFIX_MASK_KEY], dtype=torch.bool)
    ids, labels = sample["input_ids"], sample.get("labels")
    if labels is None:
        return torch.ones(ids.shape, dtype=torch.bool)  # (L,)
    supervised = (labels != IGNORE_INDEX).nonzero().squeeze(1)  # (N,)
    if supervised.numel() == 0:
        return torch.ones(ids.shape, dtype=torch.bool)
    first, last = int(supervised[0]), int(supervised[-1])
    if supervised.numel() != last - first + 1:
        raise ValueError(
            f"Sample {sample.get('id', '?')!r}: its targets are not one run (a prompt after an answer); a prefix-LM "
            "model reads one prefix and one answer per sample."
        )
    mask = torch.zeros(ids.shape, dtype=torch.bool)  # (L,)
    mask[:first] = True
    return mask


class VLMCollator:
    """Pads ``input_ids``/``labels`` and stacks image tiles for :class:`~lightning_mm.models.VisionLanguageModel`.

    Padding is masked by position (``attention_mask`` and -100 labels on the padded positions), so a pad id equal to
    the EOS id never hides a real EOS target. The tiles of all images are concatenated in the dtype they come in (uint8
    from :class:`~lightning_mm.data.ImageProcessor`; never upcast) as ``pixel_values`` (N_tiles, 3, H, W), in sample,
    image and tile order, with ``image_sizes`` (N_images, 2) (each image's original height and width),
    ``tiles_per_image`` (N_images,) and ``image_counts`` (B,) (images per sample); all three image keys are None when
    the batch has no image. A sample without ``image_sizes``/``tiles_per_image`` has one tile per image. Called in a
    DataLoader worker, the batch is returned as a :class:`WorkerBatch` (see the module docstring); the main process
    receives a plain ``dict``.

    With ``image_token_id`` and a layout (or ``num_image_tokens``), each sample's image-token count is checked against
    the sum over its images of the tokens the layout gives an image of that size.

    Dropped records (samples without ``input_ids``, see :class:`~lightning_mm.data.LlavaDataset`) are left out, and
    the batch key ``skipped`` lists their reasons, one per record, and ``kept`` the position of each sample left
    among the records given (what matches a prediction to its record). When every record of a batch was dropped, the
    batch is one padding token with nothing supervised and ``empty=True``, so every rank still runs its step (the
    loss over zero targets is zero, and the per-sample lists are empty).

    Args:
        pad_token_id: Id written into padded positions of ``input_ids``.
        padding_side: ``right`` for training, ``left`` for generation.
        image_token_id: Id of the image token; with ``layout`` or ``num_image_tokens``, the image-token count of each
            sample is checked.
        num_image_tokens: Tokens per image, for a :class:`~lightning_mm.data.FixedLayout` (when ``layout`` is None).
        pad_to_multiple_of: Round the padded length up (helps kernels on accelerators).
        layout: The image layout the samples were made with (its ``prompt_ids`` give each image's token count).
        prefix_lm: Add ``prefix_mask`` (B, T), True on each sample's prefix (:func:`sample_prefix_mask`), for a model
            whose attention pattern is a prefix LM (the data contract's ``attention_pattern``).
    """

    def __init__(
        self,
        pad_token_id: int,
        padding_side: str = "right",
        image_token_id: int | None = None,
        num_image_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        layout: ImageLayout | None = None,
        prefix_lm: bool = False,
    ) -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        self.layout = resolve_layout(layout, num_image_tokens, image_token_id)
        self.prefix_lm = prefix_lm

    def _pad(self, seqs: list[torch.Tensor], value: int) -> torch.Tensor:
        out = pad_sequence(seqs, batch_first=True, padding_value=value, padding_side=self.padding_side)  # (B, T)
        m = self.pad_to_multiple_of
        if m and out.shape[1] % m:
            extra = m - out.shape[1] % m
            pad = (extra, 0) if self.padding_side == "left" else (0, extra)
            out = torch.nn.functional.pad(out, pad, value=value)
        return out

    def _empty(self, training: bool) -> dict[str, Any]:
        """The batch of a micro-batch whose every record was dropped: one padding token, no target, no image."""
        batch: dict[str, Any] = {
            "input_ids": torch.full((1, 1), self.pad_token_id, dtype=torch.long),  # (1, 1)
            "attention_mask": torch.ones(1, 1, dtype=torch.long),  # (1, 1)
            "image_counts": torch.zeros(1, dtype=torch.long),  # (1,)
            "pixel_values": None,
            "image_sizes": None,
            "tiles_per_image": None,
            EMPTY_KEY: True,
        }
        if training:
            batch["labels"] = torch.full((1, 1), IGNORE_INDEX, dtype=torch.long)  # (1, 1)
        return batch

    def _images(self, samples: Sequence[dict[str, Any]], batch: dict[str, Any]) -> None:
        """``pixel_values``, ``image_sizes``, ``tiles_per_image`` and ``image_counts`` of the batch."""
        images = [s.get("pixel_values") for s in samples]
        geometry = [_image_geometry(s) for s in samples]
        batch["image_counts"] = torch.tensor([len(per) for _, per in geometry], dtype=torch.long)  # (B,)
        present = [im for im in images if im is not None and im.shape[0] > 0]
        mixed = [b for b, im in enumerate(images) if im is not None and im.shape[0] and im.dtype != present[0].dtype]
        if mixed:  # torch.cat would promote uint8 pixels to float, which the tower takes as already normalised
            b = mixed[0]
            raise ValueError(
                f"Sample {samples[b].get('id', b)!r}: images of dtype {images[b].dtype} in a batch of "
                f"{present[0].dtype} images; uint8 and normalised float images cannot be mixed."
            )
        batch["pixel_values"] = torch.cat(present) if present else None  # (N_tiles, 3, H, W), dtype kept
        batch["image_sizes"] = torch.cat([sz for sz, _ in geometry]) if present else None  # (N_images, 2)
        batch["tiles_per_image"] = torch.cat([per for _, per in geometry]) if present else None  # (N_images,)
        if self.image_token_id is None or self.layout is None:
            return
        found = (batch["input_ids"] == self.image_token_id).sum(dim=1).tolist()  # (B,)
        for b, (sizes, _) in enumerate(geometry):
            check_image_tokens(samples[b].get("id", b), found[b], sizes, self.layout, self.image_token_id)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        skipped = [r for s in samples for r in (s.get(SKIPPED_KEY) or ())]
        has_skip_key = any(SKIPPED_KEY in s for s in samples)
        kept = [i for i, s in enumerate(samples) if "input_ids" in s]  # (B,) positions among the records
        samples = [samples[i] for i in kept]  # dropped records yield nothing
        if not samples:
            batch = self._empty(self.padding_side == "right")
            batch["id"] = []
            batch[SKIPPED_KEY] = skipped
            batch[KEPT_KEY] = []
            return WorkerBatch(batch) if get_worker_info() is not None else batch
        ids = [s["input_ids"] for s in samples]
        batch: dict[str, Any] = {
            "input_ids": self._pad(ids, self.pad_token_id),  # (B, T)
            "attention_mask": self._pad([torch.ones_like(x) for x in ids], 0),  # (B, T)
        }
        if "labels" in samples[0]:
            for s in samples:
                if s["labels"].shape != s["input_ids"].shape:
                    raise ValueError(
                        f"Sample {s.get('id', '?')!r}: labels {tuple(s['labels'].shape)} and input_ids "
                        f"{tuple(s['input_ids'].shape)} differ in shape."
                    )
            batch["labels"] = self._pad([s["labels"] for s in samples], IGNORE_INDEX)  # (B, T)
        if self.prefix_lm:
            batch[PREFIX_MASK_KEY] = self._pad([sample_prefix_mask(s) for s in samples], 0).bool()  # (B, T)
        self._images(samples, batch)
        for key in samples[0]:
            if key not in _TENSOR_KEYS and key not in batch and key != SKIPPED_KEY:
                batch[key] = [s.get(key) for s in samples]
        if has_skip_key:
            batch[SKIPPED_KEY] = skipped
            batch[KEPT_KEY] = kept
        return WorkerBatch(batch) if get_worker_info() is not None else batch
