"""Payload and prompt sampling (serving.sampler)."""

from __future__ import annotations

import asyncio
import json
import random

from llmops.gateway_config import (
    Sampling,
)
from llmops.serving.sampler import Sampler


def test_sampler_writes_jsonl_and_bounds_its_buffer(tmp_path):
    dropped: list[int] = []
    config = Sampling(rate=0.5, destination={"local": {"path": str(tmp_path)}}, max_buffered=3)
    sampler = Sampler(config, kind="prompt", rng=random.Random(0), on_dropped=dropped.append)
    chosen = sum(sampler.chosen() for _ in range(1000))
    assert 400 < chosen < 600
    for i in range(5):
        sampler.add({"text": f"t{i}"})
    assert len(dropped) == 2
    asyncio.run(sampler.flush())
    files = list(tmp_path.rglob("*-prompt-000001.jsonl"))
    assert len(files) == 1
    assert [json.loads(line)["text"] for line in files[0].read_text().splitlines()] == ["t0", "t1", "t2"]


def test_a_keeping_sampler_writes_failed_records_at_the_next_flush(tmp_path):
    """`keep_failed` (feedback): a failed write keeps the records, bounded by maxBuffered."""
    dropped: list[int] = []
    config = Sampling(rate=1.0, destination={"local": {"path": str(tmp_path)}}, max_buffered=3)
    sampler = Sampler(config, kind="feedback", on_dropped=dropped.append, keep_failed=True)
    put = sampler.store.put_bytes
    sampler.store.put_bytes = lambda key, data: (_ for _ in ()).throw(OSError("store down"))
    for i in range(2):
        sampler.add({"n": i})
    asyncio.run(sampler.flush())
    sampler.add({"n": 2})
    sampler.add({"n": 3})  # the buffer holds 3: this one is dropped
    assert dropped == [1]
    sampler.store.put_bytes = put
    asyncio.run(sampler.flush())
    files = list(tmp_path.rglob("*-feedback-*.jsonl"))
    assert [json.loads(line)["n"] for line in files[0].read_text().splitlines()] == [0, 1, 2]
