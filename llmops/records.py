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

from llmops import gateway_config
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
    """payload, feedback or prompt for a key the gateway's sampler wrote, at any depth below a
    destination (the drift prompts' folder sits below the payload samples'), else None."""
    return gateway_config.sample_kind("/".join(key.rsplit("/", 2)[-2:]))


def remove(
    store: ObjectStore,
    keys: Iterable[str],
    selected: Callable[[dict[str, Any]], bool],
) -> Removed:
    """Rewrite each object of `keys` without the records `selected` picks; every other line stays
    byte for byte, a line that is not a JSON object included (never lost by a removal that cannot
    read it). Lines end at \\n only (llmops/jsonl.py's rule)."""
    total = Removed()
    for key in keys:
        data = store.get_bytes(key)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        kept = [line for line in lines if not _picked(line, selected)]
        removed = len(lines) - len(kept)
        if not removed:
            continue
        if kept:
            body = b"".join(line + b"\n" for line in kept)
            store.put_bytes(key, body)
            total = total.add(Removed(rewritten=1, records=removed, bytes=len(data) - len(body)))
        else:
            store.delete(key)
            total = total.add(Removed(deleted=1, records=removed, bytes=len(data)))
    return total


def _picked(line: bytes, selected: Callable[[dict[str, Any]], bool]) -> bool:
    try:
        record = json.loads(line.removesuffix(b"\r"))
    except ValueError:
        return False
    return isinstance(record, dict) and selected(record)
