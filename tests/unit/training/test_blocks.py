"""llmops/training/blocks.py: a worker's shard streamed from Parquet equals the shard of the whole split."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from llmops.training import blocks


def _split(tmp_path, parts: list[int], block: int = 6) -> tuple[str, np.ndarray, np.ndarray]:
    """Parquet parts of the given row counts under <tmp>/train; returns (path, all ids, all lengths)."""
    rng = np.random.default_rng(0)
    total = sum(parts)
    ids = rng.integers(0, 30000, size=(total, block), dtype=np.int64)
    lengths = rng.integers(1, block + 1, size=total, dtype=np.int64)
    (tmp_path / "train").mkdir()
    start = 0
    for i, n in enumerate(parts):
        table = pa.table(
            {
                "input_ids": pa.array(ids[start : start + n].tolist(), pa.list_(pa.int32())),
                "length": pa.array(lengths[start : start + n], pa.int32()),
            }
        )
        pq.write_table(table, tmp_path / "train" / f"part-{i:03d}.parquet", row_group_size=3)
        start += n
    return str(tmp_path / "train"), ids, lengths


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("truncate", [False, True])
def test_shard_is_every_worlds_row_of_the_split(tmp_path, monkeypatch, world, truncate):
    """Row j of rank r's shard is global row r + j·world (below the limit), across files and record
    batches of any size: the same blocks, in the same order, as slicing the whole split in memory."""
    monkeypatch.setattr(blocks, "READ_ROWS", 4)  # record batches that cut across ranks and files
    path, ids, lengths = _split(tmp_path, [7, 1, 10, 5])
    local = fs.LocalFileSystem()
    assert blocks.split_rows(local, path) == 23
    limit = (23 // world) * world if truncate else None
    for rank in range(world):
        shard = blocks.fetch_shard(
            local, path, tmp_path / "out", split="train", rank=rank, world=world, limit=limit
        )
        want = np.arange(rank, limit if limit is not None else 23, world)
        assert len(shard) == len(want) and shard.total == 23 and shard.block == 6
        got_ids, got_lengths = shard.rows(np.arange(len(shard))[::-1])
        np.testing.assert_array_equal(got_ids, ids[want][::-1])
        np.testing.assert_array_equal(got_lengths, lengths[want][::-1])
        assert got_ids.dtype == np.int64


def test_an_absent_split_is_an_empty_shard(tmp_path):
    local = fs.LocalFileSystem()
    shard = blocks.fetch_shard(
        local, str(tmp_path / "none"), tmp_path / "out", split="validation", rank=0, world=2
    )
    assert len(shard) == 0 and shard.total == 0 and blocks.split_rows(local, str(tmp_path / "none")) == 0
    ids, lengths = shard.rows(np.arange(0))
    assert ids.shape[0] == 0 and lengths.shape == (0,)


def test_in_memory_blocks_read_like_a_shard():
    ids = np.arange(12, dtype=np.int64).reshape(4, 3)
    held = blocks.InMemory(ids, np.array([3, 2, 1, 3]))
    got, lengths = held.rows(np.array([2, 0]))
    np.testing.assert_array_equal(got, ids[[2, 0]])
    assert lengths.tolist() == [1, 3] and len(held) == 4
