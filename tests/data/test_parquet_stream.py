"""ParquetShards: local Parquet files streamed in bounded record batches, with the rows and shards of ``datasets``."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_mm.data.parquet_stream import ParquetShards
from lightning_mm.data.sources import HFSource
from tests.data.hf_rows import cauldron_fits, dataset, llava_records


@pytest.mark.parametrize("shape", ["llava", "messages", "cauldron"])
def test_rows_and_shards_are_those_of_a_datasets_stream(shape, tmp_path):
    import datasets  # a 2 s import, kept out of the module level of tests that do not need it

    records = [r for r in llava_records() if shape != "cauldron" or cauldron_fits(r)]
    ds = dataset(shape, records)  # images embedded as bytes
    for k in range(2):  # 2 files of row groups of 3 rows
        ds.shard(2, k, contiguous=True).to_parquet(str(tmp_path / f"part-{k}.parquet"), batch_size=3)
    source = HFSource(str(tmp_path / "*.parquet"), streaming=True)
    assert isinstance(source._parquet, ParquetShards) and source.schema == shape
    reference = datasets.load_dataset(
        "parquet", data_files=sorted(str(p) for p in tmp_path.glob("*.parquet")), split="train", streaming=True
    ).decode(False)
    assert source.num_shards == reference.num_shards == 2
    for shard in range(2):
        want = list(reference.shard(num_shards=2, index=shard))
        assert list(source.iter_shard(shard)) == want and len(want) == len(ds.shard(2, shard, contiguous=True))


def test_memory_is_bounded_by_the_batches_not_the_file(tmp_path):
    import datasets
    import pyarrow as pa

    rng = np.random.default_rng(0)
    n = 1500  # 1,500 rows of 10 kB in one row group: a 15 MB file
    datasets.Dataset.from_dict(
        {"id": [str(i) for i in range(n)], "blob": [rng.bytes(10_000) for _ in range(n)]}
    ).to_parquet(str(tmp_path / "big.parquet"), batch_size=n)
    shards = ParquetShards([str(tmp_path / "big.parquet")])
    base, peak, count = pa.total_allocated_bytes(), 0, 0
    for _row in shards.iter_shard(0):
        count += 1
        peak = max(peak, pa.total_allocated_bytes() - base)
    assert count == n
    assert peak < 5 * 2**20  # about 4 MiB (read buffer, pages, a batch of 64 rows); datasets held the whole 15 MB


def test_a_bad_shard_setting_is_an_error():
    with pytest.raises(FileNotFoundError, match="no Parquet file"):
        ParquetShards([])
    with pytest.raises(ValueError, match="batch_rows 0"):
        ParquetShards(["x.parquet"], batch_rows=0)
