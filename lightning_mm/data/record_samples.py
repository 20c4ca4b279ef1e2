"""One record at a time into a training (or generation) sample, by the LLaVA path's own sample building.

:class:`RecordSamples` is a :class:`~lightning_mm.data.LlavaDataset` with no file behind it: it is handed one
validated record (from any source, see :mod:`lightning_mm.data.conversations`) and builds its sample with
``LlavaDataset``'s own code: the chat template's segments, ``input_ids`` and ``labels`` from the same segments, the
image-token check, truncation never inside an image span, dropped and skipped records as markers. Only where the images
come from differs: a path, or bytes embedded in the row, or a PIL image, each decoded by
:meth:`~lightning_mm.data.ImageProcessor.load` (bytes are handed to it as an in-memory file).
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

from PIL import Image

from lightning_mm.data.collate import SKIPPED_KEY
from lightning_mm.data.images import ImageLoadError, ImageProcessor
from lightning_mm.data.layout import ImageLayout, PreparedImage
from lightning_mm.data.llava import LlavaDataset
from lightning_mm.data.llava_records import BadSampleError, evaluation_fields, parse_record

__all__ = ["RecordSamples", "load_image"]


def _load_bytes(data: bytes) -> Image.Image:
    """``ImageProcessor.load`` of an image held in memory: written to an in-memory file (Linux ``memfd``; elsewhere
    a temporary file) whose descriptor ``load`` opens (and closes)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("image", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return ImageProcessor.load(fd)
    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(data)
        f.flush()
        return ImageProcessor.load(f.name)


def load_image(image: Any, folder: str | None = None) -> Image.Image:
    """Decode one image of a row as RGB: a path (relative to ``folder``), bytes, a ``{"bytes", "path"}`` dict as
    ``datasets`` stores images, or a PIL image.

    Raises:
        ImageLoadError: the image is missing or cannot be decoded.
    """
    if isinstance(image, dict):
        image = image.get("bytes") if image.get("bytes") is not None else image.get("path")
    if isinstance(image, bytes | bytearray | memoryview):
        return _load_bytes(bytes(image))
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        return ImageProcessor.load(os.path.join(folder, path) if folder else path)
    if isinstance(image, Image.Image):  # re-encoded losslessly so that it is decoded like any file
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return _load_bytes(buf.getvalue())
    raise ImageLoadError("image_unreadable", repr(type(image)), "not a path, bytes or a PIL image")


class RecordSamples(LlavaDataset):
    """Builds the sample of one record at a time, as :class:`~lightning_mm.data.LlavaDataset` builds each of its own.

    Args:
        tokenizer: The LM's tokenizer.
        template: Chat template name or instance.
        layout: How images become tiles and prompt ids (the model's).
        image_token_id: Id of the image token.
        max_length: Longest sample in tokens (see ``LlavaDataset``).
        on_bad_sample: ``error`` or ``skip``.
        generation: Render prompts for generation instead of training samples.
        template_kwargs: Constructor arguments of the template.
        max_consecutive_drops: Give up after this many dropped records in a row (in one process).
    """

    def __init__(
        self,
        tokenizer: Any,
        template: Any,
        layout: ImageLayout,
        image_token_id: int,
        max_length: int | None = 2048,
        on_bad_sample: str = "error",
        generation: bool = False,
        template_kwargs: dict[str, Any] | None = None,
        max_consecutive_drops: int = 100,
    ) -> None:
        self._current: dict[str, Any] | None = None
        super().__init__(
            [],
            None,
            tokenizer,
            template,
            num_image_tokens=None,
            image_token_id=image_token_id,
            max_length=max_length,
            on_bad_sample=on_bad_sample,
            generation=generation,
            template_kwargs=template_kwargs,
            max_consecutive_drops=max_consecutive_drops,
            layout=layout,
        )

    def _load(self) -> None:  # no file: records are handed in by :meth:`sample`
        self.num_records = 0

    def __len__(self) -> int:
        return 1

    def where(self, index: int) -> str:
        return self._current["where"]

    def record_id(self, index: int) -> str:
        return self._current["id"]

    def record(self, index: int) -> dict[str, Any]:
        return self._current

    def images_folder(self, index: int) -> None:  # the images come with the record (see :meth:`sample`)
        return None

    def prepare_images(self, layout: ImageLayout, paths: list[str], at: str, folder: Any = None) -> list[PreparedImage]:
        try:
            return [layout.prepare(load_image(im, self._current["folder"])) for im in self._current["image_data"]]
        except ImageLoadError as e:
            raise BadSampleError(e.reason, f"{at}: {e}") from e

    def sample(self, raw: dict[str, Any], images: list[Any], where: str, folder: str | None = None) -> dict[str, Any]:
        """The sample of one LLaVA record (see :func:`~lightning_mm.data.conversations.to_llava_record`), or a
        dropped-record marker (``{"id", "skipped": [reason]}``) when it is bad and ``on_bad_sample="skip"``.

        Args:
            raw: The record (``id``, ``image`` names, ``conversations``, optional ``answers`` / ``category``).
            images: Its images (paths, bytes, ``{"bytes", "path"}`` dicts, PIL images), in placeholder order.
            where: Source, shard and row, for error messages.
            folder: Folder relative image paths are read from.

        Raises:
            BadSampleError: naming ``where`` when the record is bad and ``on_bad_sample="error"``.
        """
        try:
            rid, names, messages = parse_record(raw, where)
            extra = evaluation_fields(raw, f"{where}: record {rid!r}")
        except BadSampleError as e:
            if self.on_bad_sample == "error":
                raise
            self._note(e)
            return {"id": str(raw.get("id", where)) if isinstance(raw, dict) else where, SKIPPED_KEY: [e.reason]}
        shown = [
            os.path.join(folder, n) if folder and isinstance(im, str) else n
            for n, im in zip(names, images, strict=True)
        ]
        self._current = {
            "id": rid,
            "images": shown,
            "messages": messages,
            "where": where,
            "folder": folder,
            "image_data": images,
            **extra,
        }
        try:
            return self[0]
        finally:
            self._current = None
