"""A Ray Train worker's shard of the packed blocks: streamed to a local file, read a batch at a time.

The prepare stage writes `prepare/{train,validation}/*.parquet` with one packed block per row:
`input_ids` (list<int32> of `block_size` tokens, padded) and `length` (int32, the real tokens).
A negative id `-(id + 1)` is a token that is input only, not a target (the prompt side of a chat
conversation, llmops/training/chat.py); `train._batch` turns it back and gives it no loss.
A worker of `world` keeps the global rows `rank, rank + world, rank + 2·world, …` below `limit`
(the rows every worker can have the same number of: `(rows // world) · world` for the train split),
the same shard in the same order as reading the whole split into memory would give. The rows
arrive from storage one record batch at a time (`READ_ROWS` rows) and go to
`<dest>/<split>-<rank>.blocks` (int32, row-major, `block_size` tokens a row); the lengths stay in
memory (4 bytes a row). `Shard.rows(index)` reads just the rows of one batch with positioned reads.

Memory: one record batch while streaming, one training batch while training; the operating
system's page cache holds the file, outside the process's resident set. The dataset's size only
changes the local file's size (4 bytes a token of the shard). `bench/training_overhead.py --scale`
prints each worker's peak RSS for the bundled data and for data 20x its size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

READ_ROWS = 1024  # rows per record batch read from storage (one batch of 1,024 blocks in memory)


@dataclass
class Shard:
    """Rows `0..len-1` of one worker's shard; row `j` is global row `rank + j · world`.

    `path`: the local int32 file of `len(self) x block` tokens; `lengths`: int64 `[len]`;
    `block`: tokens a row; `total`: rows of the whole split (every worker's shards together).
    """

    path: Path
    lengths: np.ndarray
    block: int
    total: int

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids int64 `[len(index), block]`, lengths int64 `[len(index)]`) of these local rows."""
        ids = np.empty((len(index), self.block), dtype=np.int64)
        width = self.block * 4
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            for i, j in enumerate(index):
                ids[i] = np.frombuffer(os.pread(fd, width, int(j) * width), dtype=np.int32)
        return ids, self.lengths[index]


@dataclass
class InMemory:
    """Blocks already in memory, read like a `Shard`: ids int64 `[n, block]`, lengths int64 `[n]`."""

    ids: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.ids[index], self.lengths[index]


def split_rows(fs: Any, path: str) -> int:
    """Rows of the split at `path` on pyarrow filesystem `fs`, from the Parquet footers (0 if absent)."""
    dataset = _dataset(fs, path)
    return 0 if dataset is None else dataset.count_rows()


def fetch_shard(
    fs: Any, path: str, dest: Path, *, split: str, rank: int, world: int, limit: int | None = None
) -> Shard:
    """Stream this worker's rows of the split at `path` into `dest` (see the module docstring).

    `limit`: keep only global rows below it (None: all). An absent split is an empty shard.
    """
    dataset = _dataset(fs, path)
    total = 0 if dataset is None else dataset.count_rows()
    limit = total if limit is None else min(limit, total)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{split}-{rank}.blocks"
    lengths: list[np.ndarray] = []
    block = 0
    start = 0  # global index of the first row of the current record batch
    with open(out, "wb") as f:
        if dataset is not None and limit:
            scanner = dataset.scanner(
                columns=["input_ids", "length"],
                batch_size=READ_ROWS,
                batch_readahead=1,
                fragment_readahead=1,
                use_threads=False,
            )
            for batch in scanner.to_batches():
                n = batch.num_rows
                if n == 0:
                    continue
                first = start + (rank - start) % world  # the first global row of ours in this batch
                mine = np.arange(first - start, min(n, limit - start), world)
                start += n
                if len(mine) == 0:
                    if start >= limit:
                        break
                    continue
                ids = batch.column("input_ids").take(mine)
                block = block or len(ids[0])
                flat = ids.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
                f.write(flat.reshape(-1, block).tobytes())
                lengths.append(batch.column("length").take(mine).to_numpy().astype(np.int64))
                if start >= limit:
                    break
    joined = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    return Shard(out, joined, block, total)


def _dataset(fs: Any, path: str):
    import pyarrow.dataset as ds

    try:
        return ds.dataset(path, filesystem=fs, format="parquet")
    except (FileNotFoundError, OSError):
        return None
