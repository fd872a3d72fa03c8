"""The audit log on a real MinIO: conditional creates under concurrent writers, and Object Lock."""

from __future__ import annotations

import threading

import pytest

from llmops.api.common import ObjectStorageLocation
from llmops.audit import Actor, AuditLog, Entry, LockSettings, ObjectRef, record_key
from llmops.dev import services
from llmops.dev.cluster import LocalCluster, process_alive
from llmops.storage import Credentials, ObjectExists, S3Store, open_store

PLAIN, LOCKED = "audit", "audit-locked"


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory):
    """MinIO alone (no control plane), with a plain bucket and one created with Object Lock."""
    stack = LocalCluster(tmp_path_factory.mktemp("audit-stack"), tie_to_parent=True)
    stack.logs.mkdir(parents=True, exist_ok=True)
    stack.save_state({"ports": {}, "pids": {}})
    info = services.start_minio(stack, buckets=(PLAIN,))
    store = _store(info, PLAIN)
    assert isinstance(store, S3Store)
    store.client.create_bucket(Bucket=LOCKED, ObjectLockEnabledForBucket=True)
    yield info
    procs = stack.processes()
    stack.stop(remove=True)
    assert not [n for n, (pid, _) in procs.items() if process_alive(pid, n)]


def _store(info: dict, bucket: str, prefix: str = "trail"):
    location = ObjectStorageLocation.model_validate(
        {"s3": {"endpoint": info["endpoint"], "bucket": bucket, "prefix": prefix}}
    )
    return open_store(location, Credentials(info["accessKeyId"], info["secretAccessKey"]))


def _entry(writer: int, i: int) -> Entry:
    return Entry(
        actor=Actor(type="cli", name=f"user:writer-{writer}"),
        action="alias.moved",
        object=ObjectRef(kind="Alias", name=f"bot@champion-{writer}"),
        model="bot",
        version=str(i),
        reason="test",
    )


def test_create_only_writes_are_conditional_on_minio(minio: dict) -> None:
    """S3Store's overwrite=False is a real If-None-Match put: MinIO refuses the second create."""
    store = _store(minio, PLAIN, "conditional")
    store.put_bytes("k", b"first", overwrite=False)
    with pytest.raises(ObjectExists):
        store.put_bytes("k", b"second", overwrite=False)
    assert store.get_bytes("k") == b"first"


def test_concurrent_appenders_make_one_chain(minio: dict) -> None:
    writers, each = 4, 8
    logs = [AuditLog(_store(minio, PLAIN, "concurrent")) for _ in range(writers)]  # one client each
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            barrier.wait()
            for i in range(each):
                logs[w].append(_entry(w, i))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    result = logs[0].verify()
    assert result.ok, result.problem
    assert result.count == writers * each
    written = sorted((r.data.actor.name, r.data.version) for r in logs[0].all())
    assert written == sorted((f"user:writer-{w}", str(i)) for w in range(writers) for i in range(each))


def test_records_in_an_object_lock_bucket_are_retained(minio: dict) -> None:
    store = _store(minio, LOCKED)
    assert isinstance(store, S3Store)
    log = AuditLog(store, LockSettings("GOVERNANCE", 1))
    for i in range(3):
        log.append(_entry(0, i))
    assert log.verify().ok
    key = f"trail/{record_key(2)}"
    retention = store.client.get_object_retention(Bucket=LOCKED, Key=key)["Retention"]
    assert retention["Mode"] == "GOVERNANCE"
    version = store.client.head_object(Bucket=LOCKED, Key=key)["VersionId"]
    # The locked version cannot be deleted (without a governance bypass).
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match=r"WORM|AccessDenied"):
        store.client.delete_object(Bucket=LOCKED, Key=key, VersionId=version)
    # A plain delete only hides it behind a delete marker: verify sees the gap, the record survives.
    store.client.delete_object(Bucket=LOCKED, Key=key)
    broken = AuditLog(store).verify()
    assert broken.broken_at == 2 and "missing" in broken.problem
    body = store.client.get_object(Bucket=LOCKED, Key=key, VersionId=version)["Body"].read()
    assert b'"sequence": 2' in body
