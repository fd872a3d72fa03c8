"""The audit chain on a local directory: appends, filters, and every kind of tampering detected."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmops.audit import (
    GENESIS,
    Actor,
    AuditConfig,
    AuditError,
    AuditLog,
    AuditRecord,
    Entry,
    ObjectRef,
    canonical,
    lock_settings,
    record_key,
)
from llmops.storage import LocalStore

OPERATOR = Actor(type="operator", name="system:serviceaccount:llmops-system:llmops", on_behalf_of="alice")


def entry(i: int, kind: str = "ModelDeployment", model: str = "bot", version: str = "1") -> Entry:
    return Entry(
        actor=OPERATOR,
        action=f"{kind.lower()}.step{i}",
        object=ObjectRef(kind=kind, namespace="ml", name="bot", uid="u-1"),
        model=model,
        version=version,
        digests={"model/config.json": "ab" * 32},
        reason=f"Step{i}",
        details={"message": f"step {i}: ünïcode"},
    )


def fresh(tmp_path: Path, n: int) -> AuditLog:
    log = AuditLog(LocalStore(tmp_path))
    for i in range(n):
        log.append(entry(i))
    return log


def test_records_chain_and_read_back_as_cloudevents(tmp_path: Path) -> None:
    log = fresh(tmp_path, 3)
    records = list(log.all())
    assert [r.data.sequence for r in records] == [1, 2, 3]
    assert records[0].data.previous == GENESIS
    assert [r.data.previous for r in records[1:]] == [r.data.hash for r in records[:-1]]
    doc = json.loads((tmp_path / record_key(2)).read_text())
    assert doc["specversion"] == "1.0" and doc["type"] == "io.llmops.modeldeployment.step1"
    assert doc["subject"] == "ml/modeldeployment/bot" and doc["data"]["actor"]["onBehalfOf"] == "alice"
    # The hash is the sha256 of the canonical form without data.hash, as documented.
    del doc["data"]["hash"]
    import hashlib

    assert hashlib.sha256(canonical(doc)).hexdigest() == records[1].data.hash
    result = log.verify()
    assert result.ok and result.count == 3 and result.head == records[-1].data.hash


def test_a_second_writer_continues_the_chain_without_listing(tmp_path: Path) -> None:
    first, second = AuditLog(LocalStore(tmp_path)), AuditLog(LocalStore(tmp_path))
    first.append(entry(0))
    second.append(entry(1))  # second finds the head by listing once
    first.append(entry(2))  # first's cached head is stale: it loses the race on 2 and moves on
    assert [r.data.sequence for r in first.all()] == [1, 2, 3]
    assert first.verify().ok


def test_threads_append_without_losing_or_forking(tmp_path: Path) -> None:
    logs = [AuditLog(LocalStore(tmp_path)) for _ in range(4)]

    def write(log: AuditLog, w: int) -> None:
        for i in range(10):
            log.append(entry(w * 100 + i))

    threads = [threading.Thread(target=write, args=(log, w)) for w, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = logs[0].verify()
    assert result.ok and result.count == 40
    assert sorted(r.data.action for r in logs[0].all()) == sorted(
        f"modeldeployment.step{w * 100 + i}" for w in range(4) for i in range(10)
    )


def test_filters(tmp_path: Path) -> None:
    log = AuditLog(LocalStore(tmp_path))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    log.append(entry(0, "TrainingJob", "bot", "1"), now=t0)
    log.append(entry(1, "ModelDeployment", "bot", "2"), now=t0 + dt.timedelta(hours=1))
    log.append(entry(2, "ModelDeployment", "other", "2"), now=t0 + dt.timedelta(hours=2))
    assert [r.data.sequence for r in log.records(model="bot")] == [1, 2]
    assert [r.data.sequence for r in log.records(version="2")] == [2, 3]
    assert [r.data.sequence for r in log.records(kind="trainingjob")] == [1]
    assert [r.data.sequence for r in log.records(since=t0 + dt.timedelta(hours=1))] == [2, 3]
    assert [r.data.sequence for r in log.records(until=dt.datetime(2026, 1, 1, 1))] == [1]


# -- tampering ---------------------------------------------------------------------------------------


def _edit(tmp_path: Path, sequence: int, change) -> None:
    path = tmp_path / record_key(sequence)
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


TAMPERS = {
    "edit a field": lambda p, i, n: _edit(p, i, lambda d: d["data"].update(reason="Forged")),
    "edit the actor": lambda p, i, n: _edit(p, i, lambda d: d["data"]["actor"].update(name="mallory")),
    "edit the time": lambda p, i, n: _edit(p, i, lambda d: d.update(time="2000-01-01T00:00:00+00:00")),
    "delete": lambda p, i, n: (p / record_key(i)).unlink(),
    "swap with the next": lambda p, i, n: _swap(p, i, i % n + 1),
    "re-hash an edited record": lambda p, i, n: _rehash(p, i),
    "insert a copy": lambda p, i, n: _insert(p, i, n),
}


def _swap(p: Path, a: int, b: int) -> None:
    if a == b:
        b = a + 1 if (p / record_key(a + 1)).exists() else a - 1
    x, y = (p / record_key(a)).read_bytes(), (p / record_key(b)).read_bytes()
    (p / record_key(a)).write_bytes(y)
    (p / record_key(b)).write_bytes(x)


def _rehash(p: Path, i: int) -> None:
    """An edit whose own hash is recomputed: the next record's `previous` no longer matches (or, for
    the last record, the head differs from the one noted)."""
    path = p / record_key(i)
    record = AuditRecord.model_validate_json(path.read_text())
    record.data.reason = "Forged"
    record.data.hash = record.computed_hash()
    path.write_text(json.dumps(record.document()))


def _insert(p: Path, i: int, n: int) -> None:
    """Shift records i.. up by one and put a forged copy of record i (renumbered) in its place."""
    for s in range(n, i - 1, -1):
        (p / record_key(s + 1)).write_bytes((p / record_key(s)).read_bytes())
    _edit(p, i, lambda d: d["data"].update(reason="Inserted"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 6), data=st.data())
def test_any_tampering_is_detected(
    tmp_path_factory: pytest.TempPathFactory, n: int, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("log")
    log = fresh(path, n)
    head = log.verify().head
    how = data.draw(st.sampled_from(sorted(TAMPERS)), label="tamper")
    which = data.draw(st.integers(1, n), label="record")
    TAMPERS[how](path, which, n)
    result = AuditLog(LocalStore(path)).verify(expect_head=head)
    assert not result.ok, f"{how} of record {which} of {n} went unnoticed"
    assert result.broken_at is not None and result.problem


def test_a_cut_tail_is_caught_only_against_a_noted_head(tmp_path: Path) -> None:
    log = fresh(tmp_path, 3)
    head = log.verify().head
    (tmp_path / record_key(3)).unlink()
    assert AuditLog(LocalStore(tmp_path)).verify().ok  # a shorter chain is still a chain
    result = AuditLog(LocalStore(tmp_path)).verify(expect_head=head)
    assert not result.ok and "expected head" in result.problem


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    result = AuditLog(LocalStore(tmp_path)).verify()
    assert result.ok and result.count == 0 and result.head == GENESIS


def test_configuration_from_the_environment(tmp_path: Path) -> None:
    assert AuditConfig.from_env({}) is None
    config = AuditConfig.from_env(
        {"LLMOPS_AUDIT": "s3://audit/llmops", "LLMOPS_AUDIT_AWS_ACCESS_KEY_ID": "AKIDSECRET",
         "LLMOPS_AUDIT_AWS_SECRET_ACCESS_KEY": "TOPSECRET", "LLMOPS_AUDIT_LOCK_MODE": "governance",
         "LLMOPS_AUDIT_LOCK_DAYS": "30"}
    )  # fmt: skip
    assert config is not None and config.lock is not None
    assert (config.lock.mode, config.lock.days) == ("GOVERNANCE", 30)
    assert config.credentials is not None and "SECRET" not in repr(config)
    local = AuditConfig.from_env({"LLMOPS_AUDIT": str(tmp_path)})
    assert local is not None and local.open().uri == f"file://{tmp_path}"
    with pytest.raises(AuditError, match="LLMOPS_AUDIT_LOCK_MODE"):
        lock_settings("forever", "3")
    with pytest.raises(AuditError, match="LLMOPS_AUDIT_LOCK_DAYS"):
        lock_settings("COMPLIANCE", "0")
    with pytest.raises(AuditError, match="needs an S3 location"):
        AuditLog(LocalStore(tmp_path), lock_settings("COMPLIANCE", "1"))
