"""Removing records from the JSON-lines objects the platform writes (payload samples, feedback, drift
prompt samples: llmops/serving/sampler.py), for disposal and erasure.

Sampled objects are not registry versions: they are rewritten in place without the removed lines (an
object left with no line is deleted). Each object is written whole with one PUT, so a reader sees the
old object or the new one, never a mix; a crash between objects leaves some rewritten and some not,
and running the removal again finishes it (already removed lines are simply not found).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from llmops import jsonl
from llmops.storage import ObjectStore


@dataclass
class Removed:
    """What a removal did: objects rewritten, objects deleted, records removed, bytes freed."""

    rewritten: int = 0
    deleted: int = 0
    records: int = 0
    bytes: int = 0

    def add(self, other: Removed) -> Removed:
        return Removed(
            self.rewritten + other.rewritten,
            self.deleted + other.deleted,
            self.records + other.records,
            self.bytes + other.bytes,
        )


def sample_kind(key: str) -> str | None:
    """payload, feedback or prompt for a key the sampler wrote (`...-<kind>-<seq>.jsonl`), else None."""
    if not key.endswith(".jsonl"):
        return None
    parts = key.rsplit("/", 1)[-1].split("-")
    return parts[-2] if len(parts) >= 3 and parts[-2] in ("payload", "feedback", "prompt") else None


def remove(
    store: ObjectStore,
    keys: Iterable[str],
    selected: Callable[[dict[str, Any]], bool],
) -> Removed:
    """Rewrite each object of `keys` without the records `selected` picks. Lines that are not JSON
    objects are kept as they are (never lost by a removal that cannot read them)."""
    total = Removed()
    for key in keys:
        data = store.get_bytes(key)
        kept: list[bytes] = []
        removed = 0
        for _, record in jsonl.read(data, key, on_error=lambda e: None):
            if isinstance(record, dict) and selected(record):
                removed += 1
            else:
                kept.append(json.dumps(record, ensure_ascii=False).encode())
        unreadable = _unreadable_lines(data, key)
        kept.extend(unreadable)
        if not removed:
            continue
        if kept:
            body = b"\n".join(kept) + b"\n"
            store.put_bytes(key, body)
            total = total.add(Removed(rewritten=1, records=removed, bytes=len(data) - len(body)))
        else:
            store.delete(key)
            total = total.add(Removed(deleted=1, records=removed, bytes=len(data)))
    return total


def _unreadable_lines(data: bytes, key: str) -> list[bytes]:
    bad: list[int] = []
    for _ in jsonl.read(data, key, on_error=lambda e: bad.append(e.line)):
        pass
    if not bad:
        return []
    lines = data.split(b"\n")
    return [lines[n - 1].rstrip(b"\r") for n in bad if 0 < n <= len(lines)]
