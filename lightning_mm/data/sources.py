"""Data sources: where the rows of a run come from, map-style (random access) or streaming (shards read in order).

A source gives rows (dicts in one of the shapes of :mod:`lightning_mm.data.conversations`) and names each one
(``where``: source, shard and row) for error messages. :class:`HFSource` reads a Hugging Face ``datasets`` dataset:
a hub id, a local ``save_to_disk`` folder or Parquet files, map-style or ``streaming=True`` (never all in memory).
Images stay undecoded (``{"bytes", "path"}`` dicts, as ``datasets`` stores them) until a worker builds the sample.
``datasets`` (and its ``pyarrow``) is imported when the first such source is opened, not with the package.
:class:`LlavaJsonSource` puts the LLaVA JSON / JSONL files of :class:`~lightning_mm.data.LlavaDataset` behind the
same interface.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lightning_mm.data.conversations import SCHEMA_COLUMNS, detect_schema
from lightning_mm.data.llava_records import BadSampleError, read_records
from lightning_mm.data.parquet_stream import ParquetShards, local_parquet_files, parquet_files

__all__ = ["DataSource", "HFSource", "LlavaJsonSource", "conversation_size"]

_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def conversation_size(row: dict[str, Any], schema: str) -> tuple[int, int]:
    """``(characters, turns)`` of a row's conversation text (image parts excluded), for length estimates."""
    turns = row.get(SCHEMA_COLUMNS[schema]) or []
    chars = 0
    for turn in turns:
        if not isinstance(turn, dict):
            continue
        if schema == "llava":
            chars += len(turn.get("value") or "")
        elif schema == "cauldron":
            chars += len(turn.get("user") or "") + len(turn.get("assistant") or "")
        else:
            content = turn.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return chars, len(turns) * (2 if schema == "cauldron" else 1)


class DataSource:
    """Rows of one dataset.

    Map-style sources (``streaming`` False) have ``len()`` and :meth:`row`; streaming ones have ``num_shards`` and
    :meth:`iter_shard`. Both have ``name``, ``schema`` (the conversation shape), ``image_column`` (None: ``images``
    or ``image``), ``image_folder`` (relative image paths are read from it) and :meth:`where`.
    """

    name: str = ""
    schema: str = "llava"
    streaming: bool = False
    image_column: str | None = None
    image_folder: str | None = None
    num_shards: int = 1

    def __len__(self) -> int:
        raise TypeError(f"{self.name}: a streaming source has no length")

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` (map-style)."""
        raise TypeError(f"{self.name}: a streaming source has no random access")

    def iter_shard(self, shard: int) -> Iterator[dict[str, Any]]:
        """The rows of shard ``shard``, in order (streaming)."""
        raise TypeError(f"{self.name}: a map-style source is read by row")

    def folder(self, key: Any) -> str | None:
        """The folder relative image paths of row ``key`` are read from."""
        return self.image_folder

    def where(self, key: Any) -> str:
        """Where a row is: ``source: row i`` or ``source: shard s row i``."""
        if isinstance(key, tuple):
            return f"{self.name}: shard {key[0]} row {key[1]}"
        return f"{self.name}: row {key}"

    def size_features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N,) characters, (N,) turns, (N,) images of every row (map-style), for length estimates."""
        sizes = [conversation_size(self.row(i), self.schema) for i in range(len(self))]
        n_images = [len(_images_of(self.row(i), self.image_column)) for i in range(len(self))]
        chars, turns = (
            (np.asarray(x, dtype=np.int64) for x in zip(*sizes, strict=True)) if sizes else (np.zeros(0),) * 2
        )
        return chars, turns, np.asarray(n_images, dtype=np.int64)


def _images_of(row: dict[str, Any], column: str | None) -> list[Any]:
    for col in (column,) if column else ("images", "image"):
        value = row.get(col)
        if value is not None:
            return list(value) if isinstance(value, list | tuple) else [value]
    return []


def _is_disk_folder(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, m)) for m in _DISK_MARKERS)


def _is_parquet(path: str | Sequence[str]) -> bool:
    paths = [path] if isinstance(path, str) else list(path)
    return bool(paths) and all(p.endswith(".parquet") for p in paths)


class HFSource(DataSource):
    """A Hugging Face ``datasets`` dataset.

    Local Parquet files streamed are read by :class:`~lightning_mm.data.parquet_stream.ParquetShards` (bounded
    record batches, one shard per file), other streamed data by ``datasets``.

    Args:
        path: A hub id (``HuggingFaceM4/the_cauldron``), a ``save_to_disk`` folder, or Parquet file(s) (a path, a
            glob or a list).
        name: The hub dataset's configuration (subset), e.g. ``vqav2``.
        split: The split to read.
        streaming: Read the rows shard by shard, never all at once (for data larger than memory).
        schema: ``llava``, ``messages`` or ``cauldron`` (None: detected from the columns).
        image_column: Column of the images (None: ``images``, else ``image``).
        image_folder: Folder relative image paths in the rows are read from.
        num_shards: Shards of a streamed ``save_to_disk`` folder (Parquet and hub data: their own files).
        data_files: ``data_files`` of ``datasets.load_dataset`` for a hub id or a builder name.
    """

    def __init__(
        self,
        path: str | list[str],
        name: str | None = None,
        split: str = "train",
        streaming: bool = False,
        schema: str | None = None,
        image_column: str | None = None,
        image_folder: str | None = None,
        num_shards: int = 16,
        data_files: str | list[str] | dict[str, Any] | None = None,
    ) -> None:
        self.name = f"{path}{':' + name if name else ''}[{split}]" if isinstance(path, str) else f"{len(path)} files"
        self.streaming = streaming
        self.image_column = image_column
        self.image_folder = image_folder
        self._parquet = None
        files = local_parquet_files(path) if streaming and _is_parquet(path) else None
        if files is not None:  # read by bounded record batches: memory does not follow the file size
            self._parquet = ParquetShards(files)
            self.schema = detect_schema(self._parquet.column_names, self.name, schema)
            self.num_shards = self._parquet.num_shards
            self._table = None
            return
        ds = self._open(path, name, split, streaming, num_shards, data_files)
        columns = list(ds.column_names or ds.features or [])
        self.schema = detect_schema(columns, self.name, schema)
        if streaming:
            self._stream = ds.decode(False)  # images stay {"bytes", "path"} until a worker decodes them
            self.num_shards = int(ds.num_shards)
            self._table = None
        else:
            self._table = ds.with_format("arrow")  # rows without decoding (no PIL image in the main process)
            self._dataset = ds

    def _open(self, path: Any, name: str | None, split: str, streaming: bool, num_shards: int, data_files: Any) -> Any:
        import datasets  # about 2 s: only when a dataset is opened

        if isinstance(path, str) and _is_disk_folder(path):
            ds = datasets.load_from_disk(path)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ValueError(f"{path}: no split {split!r}; splits: {list(ds)}")
                ds = ds[split]
            return ds.to_iterable_dataset(num_shards=max(1, min(num_shards, len(ds)))) if streaming else ds
        if _is_parquet(path):
            files = parquet_files(path)
            if not files:
                raise FileNotFoundError(f"{path}: no Parquet file")
            return datasets.load_dataset("parquet", data_files=files, split="train", streaming=streaming)
        if isinstance(path, str) and os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"{path}: not a Parquet file (.parquet), a save_to_disk folder or a hub dataset id")
        return datasets.load_dataset(path, name, split=split, data_files=data_files, streaming=streaming)

    def __len__(self) -> int:
        if self.streaming:
            return super().__len__()
        return self._table.num_rows

    def row(self, index: int) -> dict[str, Any]:
        if self.streaming:
            return super().row(index)
        return self._table[int(index)].to_pylist()[0]

    def iter_shard(self, shard: int) -> Iterator[dict[str, Any]]:
        if not self.streaming:
            yield from super().iter_shard(shard)
        if self._parquet is not None:
            yield from self._parquet.iter_shard(int(shard))
            return
        yield from self._stream.shard(num_shards=self.num_shards, index=int(shard))

    def size_features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read from the conversation column and the image column's list lengths only (no image bytes)."""
        import pyarrow.compute as pc  # installed with datasets, imported with it

        column = self.image_column or next((c for c in ("images", "image") if c in self._dataset.column_names), None)
        if column is None:
            n_images = np.zeros(len(self), dtype=np.int64)
        else:
            col = self._dataset.data.column(column)
            if str(col.type).startswith(("list", "large_list")):
                n_images = np.asarray(pc.fill_null(pc.list_value_length(col), 0), dtype=np.int64)
            else:
                n_images = np.asarray(col.is_valid(), dtype=np.int64)
        conv = self._dataset.data.column(SCHEMA_COLUMNS[self.schema]).to_pylist()
        sizes = [conversation_size({SCHEMA_COLUMNS[self.schema]: c}, self.schema) for c in conv]
        chars = np.asarray([s[0] for s in sizes], dtype=np.int64)
        turns = np.asarray([s[1] for s in sizes], dtype=np.int64)
        return chars, turns, n_images


class LlavaJsonSource(DataSource):
    """LLaVA-format ``.json`` / ``.jsonl`` files as a map-style source (the records are read once, into memory).

    A malformed line of a ``.jsonl`` file is kept as its error, raised or skipped where the row is built.

    Args:
        path: One file or several.
        image_folder: Folder the records' image paths are relative to (None: each file's folder).
    """

    def __init__(self, path: str | list[str], image_folder: str | None = None) -> None:
        self.files = [path] if isinstance(path, str) else list(path)
        self.name = ", ".join(self.files)
        self.schema = "llava"
        self._rows: list[Any] = []
        self._where: list[str] = []
        self._folders: list[str] = []
        for file in self.files:
            for line, raw in read_records(str(file)):
                self._rows.append(raw)
                self._where.append(f"{file}:{line}")
                self._folders.append(image_folder or os.path.dirname(str(file)))
        self.image_folder = image_folder

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, index: int) -> dict[str, Any] | BadSampleError:
        return self._rows[int(index)]

    def folder(self, key: Any) -> str | None:
        return self._folders[int(key)]

    def where(self, key: Any) -> str:
        return self._where[int(key)]
