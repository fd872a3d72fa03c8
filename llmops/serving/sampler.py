"""Sampled records (payloads, prompts for the drift monitor) written as jsonl to object storage.

Records wait in a bounded in-memory buffer (beyond `maxBuffered` they are dropped and counted, so a
slow store never grows the gateway without bound) and are flushed every `flushIntervalSeconds` to
`<prefix>/<YYYY-MM-DD>/<HHMMSS>-<host>-<kind>-<seq>.jsonl`, in a thread, off the event loop.
Kinds: `payload` and `prompt` (sampled at `rate`), `feedback` (every one; serving.feedback).
With `keep_failed`, records whose write failed go back to the buffer for the next flush (still
bounded by `maxBuffered`) instead of being dropped at once: feedback is not a sample to lose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import socket
from collections.abc import Callable
from typing import Any

from llmops.gateway_config import Sampling
from llmops.storage import ObjectStore, explain, open_store

log = logging.getLogger("llmops.gateway")


class Sampler:
    def __init__(
        self,
        config: Sampling,
        *,
        kind: str = "payload",
        store: ObjectStore | None = None,
        rng: random.Random | None = None,
        on_written: Callable[[int], None] = lambda n: None,
        on_dropped: Callable[[int], None] = lambda n: None,
        keep_failed: bool = False,
    ) -> None:
        self.config, self.kind = config, kind
        self.store = store or open_store(config.destination)
        self.rng = rng or random.Random()
        self.buffer: list[dict[str, Any]] = []
        self.seq = 0
        self.host = socket.gethostname()
        self.on_written, self.on_dropped = on_written, on_dropped
        self.keep_failed = keep_failed

    def chosen(self) -> bool:
        return self.config.rate > 0 and self.rng.random() < self.config.rate

    def add(self, record: dict[str, Any]) -> None:
        if len(self.buffer) >= self.config.max_buffered:
            self.on_dropped(1)
            return
        self.buffer.append(record)

    def _write(self, records: list[dict[str, Any]]) -> None:
        now = dt.datetime.now(dt.UTC)
        self.seq += 1
        key = f"{now:%Y-%m-%d}/{now:%H%M%S}-{self.host}-{self.kind}-{self.seq:06d}.jsonl"
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        self.store.put_bytes(key, data)

    async def flush(self) -> None:
        if not self.buffer:
            return
        records, self.buffer = self.buffer, []
        try:
            await asyncio.to_thread(self._write, records)
            self.on_written(len(records))
        except Exception as e:  # storage trouble must not take the gateway down
            why = explain(e) or f"{type(e).__name__}: {e}"  # the cause, never a credential
            uri = self.store.uri
            log.warning("writing %d %s records to %s failed: %s", len(records), self.kind, uri, why)
            if self.keep_failed:
                kept = (records + self.buffer)[: self.config.max_buffered]
                if lost := len(records) + len(self.buffer) - len(kept):
                    self.on_dropped(lost)
                self.buffer = kept
            else:
                self.on_dropped(len(records))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval_seconds)
            await self.flush()
