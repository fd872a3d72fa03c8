"""A version's archive and retirement on the local store: every object copied, read back and
verified by sha256 before a receipt exists; a copy cut off midway resumes; a corrupted archive is
found and blocks the delete; an alias blocks the delete; the tombstone answers for the version
afterwards and its number is never reused. Object Lock and MinIO: tests/workloads/test_archive_s3.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from llmops.api.common import ModelReference
from llmops.archive import (
    RECEIPT,
    ArchiveError,
    ArchiveNotVerified,
    ArchiveReceipt,
    archive_version,
    delete_version,
    verify_archive,
)
from llmops.registry import (
    GateVerdict,
    Lineage,
    RegistryError,
    VersionInUse,
    VersionRetired,
    move_alias,
    read_tombstone,
    read_version,
    register,
    resolve,
    retired_versions,
    version_prefix,
    versions,
)
from llmops.storage import LocalStore, ObjectLock, ObjectLockUnavailable

PREFIX = version_prefix("chat", "2")


def _register(store: LocalStore, tmp: Path, i: int) -> None:
    model = tmp / f"chat-{i}"
    (model / "adapter").mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"i": i}))
    (model / "model.safetensors").write_bytes(bytes(range(256)) * (64 + i))
    (model / "adapter" / "adapter_config.json").write_text("{}")
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    register(store, "chat", model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage(parent_job="ml/t"))


@pytest.fixture
def registry(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "registry")
    for i in range(2):
        _register(store, tmp_path, i)
    store.put_bytes(
        f"{PREFIX}/evaluation/results.json", b'{"accuracy": 0.9}'
    )  # something beyond the manifest
    return store


@pytest.fixture
def archive(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "archive")


class FailingStore:
    """Fault injection: the store, except that every write after the first `writes` (and every
    delete after the first `deletes`) raises, as storage failing mid-copy or a process killed
    between two requests would stop there."""

    def __init__(self, inner: LocalStore, writes: int = 10**9, deletes: int = 10**9) -> None:
        self.inner, self.writes, self.deletes, self.written = inner, writes, deletes, []
        self.uri = inner.uri

    def _write(self, key: str) -> None:
        if self.writes <= 0:
            raise ConnectionError(f"storage failed before writing {key}")
        self.writes -= 1
        self.written.append(key)

    def put_bytes(self, key: str, data: bytes, **kwargs) -> None:
        self._write(key)
        self.inner.put_bytes(key, data, **kwargs)

    def upload_file(self, key: str, path: Path, **kwargs) -> None:
        self._write(key)
        self.inner.upload_file(key, path, **kwargs)

    def delete(self, key: str) -> None:
        if self.deletes <= 0:
            raise ConnectionError(f"storage failed before deleting {key}")
        self.deletes -= 1
        self.inner.delete(key)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _sha(store: LocalStore, key: str) -> str:
    return hashlib.sha256(store.get_bytes(key)).hexdigest()


def test_the_archive_holds_every_object_verified(registry: LocalStore, archive: LocalStore) -> None:
    receipt = archive_version(registry, "chat", "2", archive, extra={"audit/records.jsonl": b'{"a": 1}\n'})
    source = sorted(registry.list(f"{PREFIX}/"))
    assert sorted(o.key for o in receipt.objects) == sorted([*source, f"{PREFIX}/audit/records.jsonl"])
    for obj in receipt.objects:  # what the receipt says is what the archive holds, byte for byte
        assert obj.sha256 == _sha(archive, obj.key) and obj.size == len(archive.get_bytes(obj.key))
        if obj.key in source:
            assert obj.sha256 == _sha(registry, obj.key)
    manifest = read_version(registry, "chat", "2")
    assert receipt.artifacts == manifest.artifacts and receipt.lock_mode is None
    assert ArchiveReceipt.model_validate_json(archive.get_bytes(f"{PREFIX}/{RECEIPT}")) == receipt
    assert verify_archive(archive, receipt) == []
    assert archive_version(registry, "chat", "2", archive) == receipt  # done already: the same receipt


def test_a_copy_cut_off_midway_leaves_no_receipt_and_resumes(
    registry: LocalStore, archive: LocalStore
) -> None:
    failing = FailingStore(archive, writes=3)
    with pytest.raises(ConnectionError):
        archive_version(registry, "chat", "2", failing)
    assert not archive.exists(f"{PREFIX}/{RECEIPT}") and len(list(archive.list())) == 3
    again = FailingStore(archive)
    receipt = archive_version(registry, "chat", "2", again)
    total = len(list(registry.list(f"{PREFIX}/")))
    assert len(again.written) == total - 3 + 1  # the rest and the receipt; the three verified are skipped
    assert verify_archive(archive, receipt) == []


def test_an_object_that_does_not_read_back_as_written_gets_no_receipt(
    registry: LocalStore, archive: LocalStore
) -> None:
    class Corrupting(FailingStore):  # fault injection: the storage flips a byte of what it stores
        def upload_file(self, key: str, path: Path, **kwargs) -> None:
            data = bytearray(path.read_bytes())
            data[0] ^= 0xFF
            self.inner.put_bytes(key, bytes(data))

    with pytest.raises(ArchiveError, match="does not read back as written: sha256"):
        archive_version(registry, "chat", "2", Corrupting(archive))
    assert not archive.exists(f"{PREFIX}/{RECEIPT}")


def test_a_source_that_does_not_match_its_manifest_is_not_archived(
    registry: LocalStore, archive: LocalStore
) -> None:
    registry.put_bytes(f"{PREFIX}/model/config.json", b'{"i": "tampered"}')
    with pytest.raises(ArchiveError, match="does not match the manifest"):
        archive_version(registry, "chat", "2", archive)
    assert not archive.exists(f"{PREFIX}/{RECEIPT}")


def test_a_local_directory_refuses_a_lock_before_copying(registry: LocalStore, archive: LocalStore) -> None:
    lock = ObjectLock("COMPLIANCE", dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    with pytest.raises(ObjectLockUnavailable, match="local directory"):
        archive_version(registry, "chat", "2", archive, lock=lock)
    with pytest.raises(ObjectLockUnavailable):
        archive_version(registry, "chat", "2", archive, legal_hold=True)
    assert list(archive.list()) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        ObjectLock("GOVERNANCE", dt.datetime(2030, 1, 1))


def test_a_corrupted_archive_is_found_and_blocks_the_delete(
    registry: LocalStore, archive: LocalStore
) -> None:
    receipt = archive_version(registry, "chat", "2", archive)
    archive.put_bytes(f"{PREFIX}/model/model.safetensors", b"bit rot")
    archive.delete(f"{PREFIX}/model/config.json")
    problems = verify_archive(archive, receipt)
    assert problems == [
        f"{PREFIX}/model/config.json: missing",
        f"{PREFIX}/model/model.safetensors: sha256 {hashlib.sha256(b'bit rot').hexdigest()} read back, "
        f"{receipt.artifacts['model.safetensors']} expected",
    ]
    before = sorted(registry.list(f"{PREFIX}/"))
    with pytest.raises(ArchiveNotVerified, match=r"model\.safetensors: sha256") as e:
        delete_version(registry, "chat", "2", target=archive, receipt=receipt, actor="user:ana", reason="old")
    assert e.value.problems == problems
    assert sorted(registry.list(f"{PREFIX}/")) == before  # 0 bytes deleted


def test_a_receipt_that_leaves_out_an_object_blocks_the_delete(
    registry: LocalStore, archive: LocalStore
) -> None:
    receipt = archive_version(registry, "chat", "2", archive)
    registry.put_bytes(f"{PREFIX}/evaluation/late.json", b"{}")  # written after the archive
    with pytest.raises(ArchiveNotVerified, match=r"late\.json: not in the archive"):
        delete_version(registry, "chat", "2", target=archive, receipt=receipt, actor="user:ana", reason="old")
    other = archive_version(registry, "chat", "1", archive)
    with pytest.raises(ArchiveNotVerified, match="the receipt is for chat:1"):
        delete_version(registry, "chat", "2", target=archive, receipt=other, actor="user:ana", reason="old")
    assert read_version(registry, "chat", "2").version == "2"


def test_an_alias_blocks_the_delete(registry: LocalStore, archive: LocalStore) -> None:
    move_alias(registry, "chat", "production", "2", by="user:ana", reason="release")
    move_alias(registry, "chat", "champion", "2", by="user:ana", reason="release")
    receipt = archive_version(registry, "chat", "2", archive)
    with pytest.raises(VersionInUse, match="alias champion, production"):
        delete_version(registry, "chat", "2", target=archive, receipt=receipt, actor="user:ana", reason="old")
    assert read_tombstone(registry, "chat", "2") is None and read_version(registry, "chat", "2")


def test_the_tombstone_answers_for_a_retired_version(
    registry: LocalStore, archive: LocalStore, tmp_path
) -> None:
    receipt = archive_version(registry, "chat", "2", archive)
    tombstone = delete_version(
        registry, "chat", "2", target=archive, receipt=receipt, actor="user:ana", reason="superseded",
        archive_location="s3://archive/llmops",
    )  # fmt: skip
    assert list(registry.list(f"{PREFIX}/")) == [f"{PREFIX}/tombstone.json"]
    assert read_tombstone(registry, "chat", "2") == tombstone
    assert (tombstone.by, tombstone.reason, tombstone.receipt_key) == ("user:ana", "superseded", receipt.key)
    assert tombstone.artifacts == receipt.artifacts
    for call in (
        lambda: read_version(registry, "chat", "2"),
        lambda: resolve(registry, ModelReference(name="chat", version="2")),
    ):
        with pytest.raises(
            VersionRetired, match=r"retired .* by user:ana .*archive is at s3://archive/llmops"
        ):
            call()
    assert issubclass(VersionRetired, RegistryError)
    assert versions(registry, "chat") == ["1"] and retired_versions(registry, "chat") == ["2"]
    assert resolve(registry, ModelReference(name="chat", alias="latest")).version == "1"
    _register(registry, tmp_path, 7)
    assert versions(registry, "chat") == ["1", "3"]  # the retired number is never given out again
    assert verify_archive(archive, receipt) == []  # the archive outlives the version
    with pytest.raises(VersionRetired):
        archive_version(registry, "chat", "2", archive)


def test_a_delete_cut_off_midway_completes_on_repeat(registry: LocalStore, archive: LocalStore) -> None:
    receipt = archive_version(registry, "chat", "2", archive)
    failing = FailingStore(registry, deletes=2)
    with pytest.raises(ConnectionError):
        delete_version(failing, "chat", "2", target=archive, receipt=receipt, actor="user:ana", reason="old")
    with pytest.raises(VersionRetired):  # the manifest went first: never a half version
        read_version(registry, "chat", "2")
    first = read_tombstone(registry, "chat", "2")
    again = delete_version(
        registry, "chat", "2", target=archive, receipt=receipt, actor="user:bo", reason="x"
    )
    assert again == first and list(registry.list(f"{PREFIX}/")) == [f"{PREFIX}/tombstone.json"]


def test_extra_objects_may_not_replace_the_versions_own(registry: LocalStore, archive: LocalStore) -> None:
    for key in ("manifest.json", "../1/manifest.json", RECEIPT, "tombstone.json", ""):
        with pytest.raises(ArchiveError, match="clashes"):
            archive_version(registry, "chat", "2", archive, extra={key: b"x"})
    assert list(archive.list()) == []


def test_the_archive_is_never_the_registry_itself(registry: LocalStore, archive: LocalStore) -> None:
    with pytest.raises(ArchiveError, match="another location than the registry"):
        archive_version(registry, "chat", "2", LocalStore(registry.root))
    receipt = archive_version(registry, "chat", "2", archive)
    with pytest.raises(ArchiveNotVerified, match="the archive is the registry"):
        delete_version(
            registry, "chat", "2", target=registry, receipt=receipt, actor="user:ana", reason="old"
        )
    assert read_version(registry, "chat", "2")


def test_a_broken_receipt_is_named_by_every_reader_and_blocks_the_delete(
    registry: LocalStore, archive: LocalStore
) -> None:
    """A stored receipt cut short: archiving again refuses naming it (not a parser's traceback),
    verifying lists it as a problem, and the delete that needs a verified archive deletes nothing."""
    receipt = archive_version(registry, "chat", "2", archive)
    stored = archive.get_bytes(f"{PREFIX}/{RECEIPT}")
    archive.put_bytes(f"{PREFIX}/{RECEIPT}", stored[: len(stored) // 2])
    with pytest.raises(
        ArchiveError, match=rf"the archive receipt {PREFIX}/{RECEIPT} in .* is broken \(not JSON"
    ):
        archive_version(registry, "chat", "2", archive)
    problems = verify_archive(archive, receipt)
    assert len(problems) == 1 and problems[0].startswith(f"{PREFIX}/{RECEIPT}: the archive receipt")
    before = sorted(registry.list(f"{PREFIX}/"))
    with pytest.raises(ArchiveNotVerified):
        delete_version(registry, "chat", "2", target=archive, receipt=receipt, actor="user:ana", reason="old")
    assert sorted(registry.list(f"{PREFIX}/")) == before  # 0 bytes deleted
