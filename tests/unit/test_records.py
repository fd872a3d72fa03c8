"""Removing records from sampled JSON-lines objects (llmops/records.py), on the local store."""

from __future__ import annotations

import json
from pathlib import Path

from llmops import records
from llmops.storage import LocalStore


def lines(*versions: str) -> bytes:
    return b"".join(json.dumps({"version": v, "text": f"from {v}"}).encode() + b"\n" for v in versions)


def test_sample_kind() -> None:
    assert records.sample_kind("2026-01-01/120000-gw-payload-000001.jsonl") == "payload"
    assert records.sample_kind("p/2026-01-01/120000-gw-1-feedback-000002.jsonl") == "feedback"
    assert records.sample_kind("drift-prompts/2026-01-01/120000-gw-prompt-000003.jsonl") == "prompt"
    assert records.sample_kind("2026-01-01/notes.jsonl") is None
    assert records.sample_kind("2026-01-01/120000-gw-payload-000001.json") is None


def test_remove_rewrites_deletes_and_keeps_what_it_cannot_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("a-payload-1.jsonl", lines("1", "2", "1"))
    store.put_bytes("b-payload-2.jsonl", lines("2", "2"))
    store.put_bytes("c-payload-3.jsonl", lines("1") + b"{not json\n")
    store.put_bytes("d-payload-4.jsonl", lines("2") + b"{not json\n")
    removed = records.remove(store, sorted(store.list("")), lambda r: r["version"] == "2")
    assert (removed.rewritten, removed.deleted, removed.records) == (2, 1, 4)
    assert [json.loads(x)["version"] for x in store.get_bytes("a-payload-1.jsonl").splitlines()] == ["1", "1"]
    assert not store.exists("b-payload-2.jsonl")
    assert store.get_bytes("c-payload-3.jsonl") == lines("1") + b"{not json\n"  # untouched
    assert store.get_bytes("d-payload-4.jsonl") == b"{not json\n"  # the line it cannot read is kept
    assert removed.bytes == len(lines("2")) * 4
    again = records.remove(store, sorted(store.list("")), lambda r: r["version"] == "2")
    assert again == records.Removed()  # idempotent
