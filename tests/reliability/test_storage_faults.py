"""Object-storage faults during registration, model fetch, payload sampling and archiving (issue 17, 3).

The writer's S3 client talks to a real MinIO through real fault injectors: Toxiproxy (connection
resets, stalls, latency, a bandwidth limit, the endpoint disabled for a while: the server goes away and
comes back) and a small HTTP proxy that answers `503 SlowDown`. The long run also stops MinIO itself
mid-work and starts it again. Meanwhile a reader with a clean connection lists the registry's versions
over and over and re-hashes every artifact of every version it sees. What must hold:

- nothing half-written is ever visible as a model version (the reader sees 0 partial versions);
- retries are bounded (no call makes more than llmops.storage.MAX_ATTEMPTS attempts, counted by the
  client's own event hooks) and the error that ends them names its cause and the bound;
- 0 bytes are deleted from the registry before a verified archive exists (after every archiving
  attempt, a version with any object gone has an archive that verifies clean).

An operation that fails is tried again by the test, as the operator's requeue or the init container's
restart would, at most CALLER_TRIES times. Figures: faults injected, operations tried, retries, bytes
checked (printed; `-s` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops import archive, registry
from llmops.engine import FetchItem
from llmops.fetch import fetch
from llmops.gateway_config import Sampling
from llmops.registry import GateVerdict, Lineage, RegistryError
from llmops.serving.sampler import Sampler
from llmops.storage import MAX_ATTEMPTS, Credentials, S3Store, explain
from tests.reliability.storage_support import AttemptCounter, Http503, Minio, Toxiproxy, running

CALLER_TRIES = 12  # the caller's own tries of one operation (the operator requeues, a pod restarts)
BUCKETS = ("registry", "archive", "samples")
MODEL = "bot"


@dataclasses.dataclass
class Figures:
    faults: Counter = dataclasses.field(default_factory=Counter)  # fault windows injected, by kind
    operations: Counter = dataclasses.field(default_factory=Counter)  # caller-level tries, by operation
    failures: Counter = dataclasses.field(default_factory=Counter)  # of those, failed, by cause
    bytes_checked: int = 0  # bytes re-hashed (reader, fetch) against the manifest
    partial_seen: int = 0  # versions the reader saw with an artifact missing or wrong: must stay 0
    versions_seen: set = dataclasses.field(default_factory=set)
    early_deletes: int = 0  # registry objects gone without a verified archive: must stay 0
    messages: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Storage:
    minio: Minio
    toxiproxy: Toxiproxy
    toxic_port: int
    http503: Http503
    tmp: Path

    def store(self, bucket: str, port: int | None = None, *, read_timeout: float = 60.0) -> S3Store:
        """A store of `bucket` through the port `port` (default: MinIO itself)."""
        return S3Store(
            bucket,
            "",
            endpoint=f"http://127.0.0.1:{port or self.minio.port}",
            region=None,
            credentials=Credentials(*self.minio.keys),
            read_timeout=read_timeout,
        )


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    tmp = tmp_path_factory.mktemp("storage-faults")
    (tmp / "minio").mkdir()
    minio, toxiproxy = Minio(tmp / "minio"), Toxiproxy(tmp / "toxiproxy.log")
    with running(minio, toxiproxy):
        port = toxiproxy.proxy("minio", minio.port)
        http503 = Http503(minio.port, every=2)
        s = Storage(minio, toxiproxy, port, http503, tmp)
        direct = s.store("registry")
        for bucket in BUCKETS:
            direct.client.create_bucket(Bucket=bucket)
        try:
            yield s
        finally:
            http503.close()


def _model_dir(root: Path, size: int, seed: int) -> Path:
    rng = random.Random(seed)
    d = root / f"model-{seed}"
    (d / "tokenizer").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"seed": seed}))
    (d / "tokenizer" / "tokenizer.json").write_text(json.dumps({"vocab": [rng.random() for _ in range(100)]}))
    (d / "model.safetensors").write_bytes(rng.randbytes(size))
    return d


class Reader(threading.Thread):
    """Lists the versions over a clean connection and re-hashes every artifact of each one it sees;
    a version whose manifest is visible with an artifact missing or different is partial (unless
    a tombstone shows it was being retired: its manifest goes first, then its files)."""

    def __init__(self, store: S3Store, figures: Figures) -> None:
        super().__init__(daemon=True)
        self.store, self.figures, self.halt = store, figures, threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.look()
            except Exception as e:
                failure = explain(e)
                if failure is not None and failure.retryable and failure.cause != "other":
                    self.figures.faults["reader waited"] += 1  # MinIO itself restarting: wait, look again
                else:
                    self.figures.messages.append(f"reader: {e!r}")
                    self.figures.failures["reader, unexpected"] += 1
            self.halt.wait(0.05)

    def look(self) -> None:
        for version in registry.versions(self.store, MODEL):
            try:
                manifest = registry.read_version(self.store, MODEL, version)
            except RegistryError:
                continue  # retired since it was listed
            self.figures.versions_seen.add(version)
            prefix = registry.version_prefix(MODEL, version)
            for rel, digest in manifest.artifacts.items():
                try:
                    data = self.store.get_bytes(f"{prefix}/model/{rel}")
                except Exception as e:
                    if (f := explain(e)) is not None and f.retryable and f.cause != "other":
                        raise  # the server, not the version: look again
                    data = None  # no such key
                if data is not None and hashlib.sha256(data).hexdigest() == digest:
                    self.figures.bytes_checked += len(data)
                elif registry.read_tombstone(self.store, MODEL, version) is None:
                    self.figures.partial_seen += 1
                    self.figures.messages.append(f"partial {MODEL}:{version}: {rel}")


def _try(figures: Figures, operation: str, do: Callable[[], Any]) -> Any:
    """`do()` until it succeeds, at most CALLER_TRIES times; every failure must name its cause."""
    for _ in range(CALLER_TRIES):
        figures.operations[operation] += 1
        try:
            return do()
        except Exception as e:
            failure = explain(e)
            if failure is None and isinstance(e, RegistryError) and "checksum" in str(e):
                figures.failures["checksum"] += 1  # a cut-off download, caught by the manifest's sha256
                continue
            assert failure is not None, f"{operation}: an error that names no cause: {e!r}"
            if failure.retryable and failure.cause != "other":
                assert f"after {MAX_ATTEMPTS} attempts" in failure.message, failure
            figures.failures[failure.cause] += 1
            figures.messages.append(f"{operation}: {failure.message}")
            time.sleep(0.2)
    raise AssertionError(f"{operation} did not succeed in {CALLER_TRIES} tries: {figures.messages[-3:]}")


def _check_no_early_delete(direct: S3Store, archived: S3Store, version: str, before: dict[str, bytes]) -> int:
    """0 when every registry object of `version` is still there byte for byte, or when the archive
    holds a receipt that verifies clean; else the number of objects gone too early."""
    prefix = registry.version_prefix(MODEL, version)
    gone = [k for k in before if not direct.exists(k) or direct.get_bytes(k) != before[k]]
    gone = [k for k in gone if not k.endswith(registry.TOMBSTONE)]
    if not gone:
        return 0
    receipt_key = f"{prefix}/{archive.RECEIPT}"
    if archived.exists(receipt_key):
        receipt = archive.ArchiveReceipt.model_validate_json(archived.get_bytes(receipt_key))
        if archive.verify_archive(archived, receipt) == []:
            return 0
    return len(gone)


def _round(s: Storage, figures: Figures, port: int, seed: int, size: int, read_timeout: float) -> None:
    """Register, fetch, sample and archive (then delete) once, through `port`."""
    faulty = {b: s.store(b, port, read_timeout=read_timeout) for b in BUCKETS}
    counters = {b: AttemptCounter(store.client) for b, store in faulty.items()}
    direct = {b: s.store(b) for b in BUCKETS}
    model_dir = _model_dir(s.tmp, size, seed)
    gates = [GateVerdict(metric="loss", operator="<=", threshold=9.0, value=1.0, passed=True)]

    version = _try(
        figures,
        "register",
        lambda: (
            registry.register(
                faulty["registry"], MODEL, model_dir, metrics={"loss": 1.0}, gates=gates, lineage=Lineage()
            ).version
        ),
    )
    into = s.tmp / f"fetched-{seed}"
    _try(figures, "fetch", lambda: fetch(faulty["registry"], FetchItem("model", MODEL, version), into))
    figures.bytes_checked += sum(p.stat().st_size for p in (into / "model").rglob("*") if p.is_file())

    sampling = Sampling.model_validate(
        {"rate": 1.0, "destination": {"s3": {"bucket": "samples"}}, "flushIntervalSeconds": 1}
    )
    sampler = Sampler(sampling, kind="payload", store=faulty["samples"], keep_failed=True)
    for i in range(20):
        sampler.add({"seed": seed, "i": i})

    def flush() -> None:
        asyncio.run(sampler.flush())
        if sampler.buffer:
            raise ConnectionError("records kept for the next flush")  # the sampler logs the cause

    _try(figures, "sample", flush)

    prefix = registry.version_prefix(MODEL, version)
    before = {k: direct["registry"].get_bytes(k) for k in direct["registry"].list(prefix + "/")}

    def retire() -> None:
        try:
            receipt = archive.archive_version(faulty["registry"], MODEL, version, faulty["archive"])
            archive.delete_version(
                faulty["registry"], MODEL, version, target=faulty["archive"], receipt=receipt,
                actor="user:test", reason="storage faults",
            )  # fmt: skip
        finally:
            figures.early_deletes += _check_no_early_delete(
                direct["registry"], direct["archive"], version, before
            )

    _try(figures, "archive", retire)
    assert registry.read_tombstone(direct["registry"], MODEL, version) is not None
    for bucket, counter in counters.items():
        assert counter.most <= MAX_ATTEMPTS, f"{bucket}: a call made {counter.most} attempts"
        figures.operations["s3 calls"] += counter.calls
        figures.operations["s3 attempts"] += counter.attempts
        figures.faults["retries"] += counter.retries


@contextlib.contextmanager
def _fault(s: Storage, figures: Figures, kind: str) -> Iterator[int]:
    """Inject the fault `kind` for the duration; yields the port the writer must use."""
    proxy = "minio"
    figures.faults[kind] += 1
    timer: threading.Timer | None = None
    if kind == "reset_peer":
        s.toxiproxy.toxic(proxy, "reset_peer", {"timeout": 0}, toxicity=0.3)
    elif kind == "stall":
        s.toxiproxy.toxic(proxy, "timeout", {"timeout": 0}, toxicity=0.3)
    elif kind == "latency":
        s.toxiproxy.toxic(proxy, "latency", {"latency": 200, "jitter": 100})
    elif kind == "bandwidth":
        s.toxiproxy.toxic(proxy, "bandwidth", {"rate": 512})  # KB/s
    elif kind == "goes_away":  # the endpoint disappears for 3 s, then comes back
        s.toxiproxy.enable(proxy, False)
        timer = threading.Timer(3.0, s.toxiproxy.enable, (proxy, True))
        timer.start()
    elif kind == "minio_restart":  # MinIO itself stops mid-work and starts again on the same data

        def restart() -> None:
            s.minio.stop()
            time.sleep(2)
            s.minio.start()

        timer = threading.Timer(1.0, restart)
        timer.start()
    try:
        yield s.http503.port if kind == "http503" else s.toxic_port
    finally:
        if timer is not None:
            timer.join()
        s.toxiproxy.clear(proxy)


def _run(s: Storage, kinds: list[str], rounds: int, size: int) -> Figures:
    figures = Figures()
    reader = Reader(s.store("registry"), figures)
    reader.start()
    answered = s.http503.answered
    try:
        seed = 0
        for _ in range(rounds):
            for kind in kinds:
                seed += 1
                with _fault(s, figures, kind) as port:
                    _round(s, figures, port, seed, size, read_timeout=2.0)
    finally:
        alive = reader.is_alive()
        reader.halt.set()
        reader.join(30)
    assert alive, "the reader stopped before the end"
    figures.faults["503 answered"] += s.http503.answered - answered
    print(
        f"\nstorage faults: windows {dict(figures.faults)}; operations {dict(figures.operations)}; "
        f"failures by cause {dict(figures.failures)}; bytes checked {figures.bytes_checked}; "
        f"versions seen by the reader {len(figures.versions_seen)}; partial versions seen "
        f"{figures.partial_seen}; objects deleted before a verified archive {figures.early_deletes}"
    )
    for message in figures.messages[:8]:
        print(f"  e.g. {message}")
    assert figures.partial_seen == 0, figures.messages
    assert figures.failures["reader, unexpected"] == 0, figures.messages
    assert figures.early_deletes == 0
    assert figures.versions_seen, "the reader saw no version"
    return figures


KINDS = ["reset_peer", "stall", "latency", "bandwidth", "http503", "goes_away"]


def test_storage_faults(storage: Storage) -> None:
    figures = _run(storage, KINDS, rounds=1, size=256 * 1024)
    assert figures.faults["retries"] > 0, "no fault was met: the injection did not work"


@pytest.mark.long
def test_storage_faults_long(storage: Storage) -> None:
    """Bigger weights (multipart: above boto3's 8 MiB threshold), more rounds, and MinIO restarted."""
    rounds = int(os.environ.get("LLMOPS_STORAGE_FAULT_ROUNDS", "3"))
    figures = _run(storage, [*KINDS, "minio_restart"], rounds=rounds, size=12 * 1024 * 1024)
    assert figures.faults["retries"] > 0
