"""The local object store publishes whole objects only, and the registry survives a broken record.

A writer killed with SIGKILL in the middle of a create-only write (a real process, killed while
its bytes are going to disk) must leave nothing visible under the key, and a later writer must
be able to create it. A manifest that is broken anyway (truncated by an older writer, or edited by
hand) is skipped with a warning: it never stops later registrations of the same model.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmops.api.common import ModelReference
from llmops.registry import BrokenRecord, GateVerdict, Lineage, read_version, register, resolve, versions
from llmops.storage import LocalStore, ObjectExists

WRITER = """
import sys
from pathlib import Path
from llmops.storage import LocalStore


store = LocalStore(Path(sys.argv[1]))
# 1 GiB written in one call: long enough to be killed half-way on any machine.
store.put_bytes("models/m/versions/1/manifest.json", b"x" * (1 << 30), overwrite=False)
"""


def test_a_writer_killed_mid_write_leaves_nothing_visible(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], cwd=Path(__file__).parents[2])
    folder = root / "models" / "m" / "versions" / "1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until bytes are on their way to disk
        staged = list(folder.glob(".*.tmp")) if folder.exists() else []
        if staged and staged[0].stat().st_size > 0:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the writer never started writing")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    store = LocalStore(root)
    assert not store.exists("models/m/versions/1/manifest.json")
    assert list(store.list("models/")) == []  # the staged bytes are never listed
    store.put_bytes("models/m/versions/1/manifest.json", b"{}", overwrite=False)
    with pytest.raises(ObjectExists):
        store.put_bytes("models/m/versions/1/manifest.json", b"{}", overwrite=False)


def _model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return model


def test_a_broken_manifest_is_skipped_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(tmp_path / "registry")
    gates = [GateVerdict(metric="perplexity", operator="<=", threshold=50, value=10, passed=True)]
    first = register(store, "m", _model(tmp_path), metrics={}, gates=gates, lineage=Lineage())
    assert first.version == "1"
    # Version 2 as an older writer left it after a crash: claimed, manifest empty.
    store.put_bytes("models/m/versions/2/claim", b"{}", overwrite=False)
    (tmp_path / "registry" / "models" / "m" / "versions" / "2" / "manifest.json").write_bytes(b"")

    with pytest.raises(BrokenRecord, match=r"m:2 .* broken manifest\.json"):
        read_version(store, "m", "2")
    with caplog.at_level(logging.WARNING):
        assert resolve(store, ModelReference(name="m", alias="latest")).version == "1"
    assert "broken manifest.json" in caplog.text

    third = register(store, "m", _model(tmp_path), metrics={}, gates=gates, lineage=Lineage())
    assert third.version == "3"
    assert versions(store, "m") == ["1", "2", "3"]
    assert resolve(store, ModelReference(name="m", alias="latest")).version == "3"


def test_store_cache_opens_each_location_once(tmp_path: Path) -> None:
    """One store per location and credentials, reused; least recently used ones go beyond the size."""
    from llmops.api.common import ObjectStorageLocation
    from llmops.storage import Credentials, StoreCache

    def s3(bucket: str) -> ObjectStorageLocation:
        return ObjectStorageLocation.model_validate(
            {"s3": {"bucket": bucket, "endpoint": "http://127.0.0.1:9"}}
        )

    cache = StoreCache(size=2)
    keys = Credentials("id", "secret")
    first = cache.open(s3("aaa"), keys)
    assert cache.open(s3("aaa"), Credentials("id", "secret")) is first
    assert cache.open(s3("aaa"), Credentials("id", "other")) is not first  # rotated keys: a new client
    assert cache.open(s3("bbb"), keys) is not first
    assert len(cache) == 2
    assert cache.open(s3("aaa"), keys) is not first  # evicted as the least recently used


def test_deleting_the_last_object_of_a_prefix_leaves_no_empty_folder(tmp_path: Path) -> None:
    """A folder is not an object: once its last object is deleted it goes, up to (not including) the
    root, so a local registry lists and looks like S3 after a version's model/ is deleted."""
    store = LocalStore(tmp_path / "root")
    for key in ("models/a/versions/1/model/w.bin", "models/a/versions/1/manifest.json", "keep.txt"):
        store.put_bytes(key, b"x")
    store.delete("models/a/versions/1/model/w.bin")
    assert not (tmp_path / "root" / "models/a/versions/1/model").exists()
    assert (tmp_path / "root" / "models/a/versions/1/manifest.json").exists()
    store.delete("models/a/versions/1/manifest.json")
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["keep.txt"]
    store.delete("keep.txt")
    assert (tmp_path / "root").is_dir() and not any((tmp_path / "root").iterdir())
    store.delete("models/gone/never.bin")  # a key that is not there: nothing, no error
    store.put_bytes("models/a/versions/2/manifest.json", b"y")  # a writer recreates what it needs
    assert store.get_bytes("models/a/versions/2/manifest.json") == b"y"
