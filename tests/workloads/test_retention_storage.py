"""The retention sweep deleting for real in MinIO (S3): only the store's own objects under its own
prefix, bounded per pass, idempotent. Decisions are tested in tests/unit/operators/test_retention.py."""

from __future__ import annotations

import datetime as dt

from llmops.api.common import ObjectStorageLocation
from llmops.operators import retention
from llmops.storage import Credentials, open_store

KEYS = [f"2026-11-0{d}/10150{d}-gateway-7c9-payload-00000{d}.jsonl" for d in range(1, 6)]
FEEDBACK = "2026-11-01/101501-gateway-7c9-feedback-000001.jsonl"
PROMPT = "drift-prompts/2026-11-01/101501-gateway-7c9-prompt-000001.jsonl"


def test_sweep_deletes_only_its_own_expired_objects(minio, s3, monkeypatch):
    s3.create_bucket(Bucket="retention")
    for key in KEYS:
        s3.put_object(Bucket="retention", Key=f"samples/chat/{key}", Body=b"{}\n" * 3)
    others = [f"samples/chat/{FEEDBACK}", f"samples/chat/{PROMPT}", "samples/chat-2/" + KEYS[0], KEYS[0]]
    for key in others:  # another store, another deployment's prefix beside ours, the bucket's root
        s3.put_object(Bucket="retention", Key=key, Body=b"{}\n")
    location = ObjectStorageLocation.model_validate(
        {"s3": {"bucket": "retention", "prefix": "samples/chat", "endpoint": minio["endpoint"]}}
    )
    store = open_store(location, Credentials(minio["access_key"], minio["secret_key"]))
    (target, *_) = retention.deployment_targets(location, 30, True, None, None, None)

    listed = {i.key: i for i in store.list_info()}
    assert listed[KEYS[0]].size == 9 and listed[KEYS[0]].modified.tzinfo is not None

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)  # every object written now is expired then
    monkeypatch.setattr(retention, "MAX_DELETED", 2)
    first = retention.sweep(store, target, 30, later, None)
    assert (first.deleted_objects, first.deleted_bytes, first.kept_objects, first.complete) == (
        2,
        18,
        3,
        False,
    )
    second = retention.sweep(store, target, 30, later, first)
    third = retention.sweep(store, target, 30, later, second)
    assert (third.deleted_objects, third.deleted_bytes, third.kept_objects, third.complete) == (
        5,
        45,
        0,
        True,
    )
    again = retention.sweep(store, target, 30, later, third)
    assert (again.deleted_objects, again.kept_objects) == (5, 0)

    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="retention")["Contents"])
    assert left == sorted(others)
    now = retention.sweep(store, target, 30, dt.datetime.now(dt.UTC), None)
    assert now.deleted_objects == 0  # nothing of the store is left; the others were never its own


def test_threads_sharing_a_store_keep_their_connections(minio, s3, caplog):
    """24 threads (the operator's 16 handler threads share one store per location) read through one
    S3Store from a real MinIO: urllib3 opens at most one connection per thread and discards none.
    With botocore's default pool of 10 it discarded 14 of its 24 connections as they were given back
    (each closed, and opened anew when the threads asked again)."""
    import logging
    import threading

    s3.create_bucket(Bucket="pooled")
    s3.put_object(Bucket="pooled", Key="m/v1/manifest.json", Body=b"{}")
    location = ObjectStorageLocation.model_validate(
        {"s3": {"bucket": "pooled", "prefix": "m", "endpoint": minio["endpoint"]}}
    )
    store = open_store(location, Credentials(minio["access_key"], minio["secret_key"]))
    threads, each = 24, 10
    read: list[bytes] = []

    def work() -> None:
        for _ in range(each):
            read.append(store.get_bytes("v1/manifest.json"))

    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    opened = [r for r in caplog.records if r.getMessage().startswith("Starting new HTTP")]
    discarded = [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
    print(f"{len(read)} reads, {threads} threads: {len(opened)} opened, {len(discarded)} discarded")
    assert read == [b"{}"] * threads * each
    assert len(opened) <= threads and not discarded
