"""Local Parquet files streamed in record batches of bounded size, one shard per file.

``datasets`` streams a Parquet file holding its Arrow data a whole row group at a time, so the memory of a streamed
run follows the size of its row groups (a file written as one row group is held whole; with ``datasets`` 4.x, 10x
larger files took 2.6x the loader's memory: ``benchmarks/data.py --memory-only --memory-layout large-row-groups``).
:class:`ParquetShards` reads local files with ``pyarrow`` directly: column chunks through a read buffer of ``buffer_bytes`` (never a whole column chunk at once, never the whole row
group pre-buffered) and rows in record batches of ``batch_rows``, so the reader's memory is bounded by those buffers
and by the file's pages, not by the file. Shard ``s`` is file ``s`` (as ``datasets`` shards local Parquet files), and
its rows come in file order as the dicts ``datasets`` gives with ``decode(False)`` (images as ``{"bytes", "path"}``),
so the seeded order, resume and the split over ranks and workers are those of a ``datasets`` stream of the same files.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["ParquetShards", "local_parquet_files", "parquet_files"]

BATCH_ROWS = 64  # rows per record batch read
BUFFER_BYTES = 1 << 20  # read buffer of a column chunk


def parquet_files(path: str | Sequence[str]) -> list[str]:
    """The files of a Parquet ``path``: a glob (or one file) expanded and sorted, or a list as given."""
    return sorted(glob.glob(path)) if isinstance(path, str) else [str(p) for p in path]


def local_parquet_files(path: str | Sequence[str]) -> list[str] | None:
    """The local ``.parquet`` files of ``path`` (a file, a glob or a list, as :func:`parquet_files` lists them);
    None if any is not a local file (a hub path, a URL)."""
    files = parquet_files(path)
    if not files or not all(f.endswith(".parquet") and os.path.isfile(f) for f in files):
        return None
    return files


class ParquetShards:
    """Rows of local Parquet files, streamed file by file in bounded record batches.

    Args:
        files: The files, in shard order.
        batch_rows: Rows per record batch (the rows held in Python at once, per shard being read).
        buffer_bytes: Read buffer of each column chunk (bytes).
    """

    def __init__(self, files: Sequence[str], batch_rows: int = BATCH_ROWS, buffer_bytes: int = BUFFER_BYTES) -> None:
        import pyarrow.parquet as pq  # installed with datasets

        if not files:
            raise FileNotFoundError("no Parquet file to stream")
        if batch_rows < 1 or buffer_bytes < 1:
            raise ValueError(f"batch_rows {batch_rows} and buffer_bytes {buffer_bytes} must be >= 1")
        self.files = list(files)
        self.batch_rows = int(batch_rows)
        self.buffer_bytes = int(buffer_bytes)
        self.column_names: list[str] = list(pq.read_schema(self.files[0]).names)

    @property
    def num_shards(self) -> int:
        """One shard per file."""
        return len(self.files)

    def iter_shard(self, shard: int) -> Iterator[dict[str, Any]]:
        """The rows of file ``shard``, in order."""
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.files[shard], pre_buffer=False, buffer_size=self.buffer_bytes) as f:
            for batch in f.iter_batches(batch_size=self.batch_rows, use_threads=False):
                yield from batch.to_pylist()
