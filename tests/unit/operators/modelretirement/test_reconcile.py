"""The ModelRetirement reconcile on local stores, step by step, with the faults that matter: a status
write lost after any step (the operator killed between a side effect and its record), storage failing
mid-copy, an archive corrupted after it was verified, an alias that still names the version. In every
case nothing is deleted from the registry before a verified archive exists.

The cluster is a stand-in here (no ModelDeployment serves the version; the Kubernetes side of the
drain is tests/cluster/modelretirement), and so is Prometheus where a drain reads requests in flight (a
stub that answers one count); stores, registry, archive and post-mortem are the real code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from llmops import registry as reg
from llmops.api.common import ObjectStorageLocation
from llmops.api.modelretirement import ModelRetirementSpec, ModelRetirementStatus
from llmops.operators.modelretirement import fold
from llmops.operators.modelretirement.reconcile import DRY_RUN_REFRESH_SECONDS, Retirement
from llmops.operators.outcome import Outcome
from llmops.operators.runtime import Context
from llmops.storage import LocalStore, StoreCache

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


class Applier:
    """No ModelDeployment in the namespace."""

    kube = None

    def list(self, *args: Any, **kwargs: Any) -> list[dict]:
        return []


class Stores(StoreCache):
    """The stores the reconcile opens, by location: the test's, so it can wrap them with faults."""

    def __init__(self, by_uri: dict[str, Any]) -> None:
        super().__init__()
        self.by_uri = by_uri

    def open(self, location: ObjectStorageLocation, credentials: Any = None, **_: Any) -> Any:
        return self.by_uri.get(location.uri) or LocalStore(Path(location.uri))


class FailingStore:
    """Fault injection: every write after the first `writes` raises, as storage failing mid-copy."""

    def __init__(self, inner: LocalStore, writes: int) -> None:
        self.inner, self.writes, self.uri = inner, writes, inner.uri

    def _write(self, key: str) -> None:
        if self.writes <= 0:
            raise ConnectionResetError(f"storage failed before writing {key}")
        self.writes -= 1

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> None:
        self._write(key)
        self.inner.put_bytes(key, data, **kwargs)

    def upload_file(self, key: str, path: Path, **kwargs: Any) -> None:
        self._write(key)
        self.inner.upload_file(key, path, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    registry, archive = LocalStore(tmp_path / "registry"), LocalStore(tmp_path / "archive")
    for i in (1, 2):
        model = tmp_path / f"model-{i}"
        model.mkdir()
        (model / "config.json").write_text(f'{{"v": {i}}}')
        (model / "weights.bin").write_bytes(bytes([i]) * 10_000)
        gates = [reg.GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
        reg.register(
            registry, "bot", model, metrics={}, gates=gates, lineage=reg.Lineage(parent_job="ml/train")
        )
    spec = ModelRetirementSpec.model_validate(
        {
            "model": {"name": "bot", "version": "2"},
            "registry": {"local": {"path": str(tmp_path / "registry")}},
            "reason": "superseded",
            "archive": {"location": {"local": {"path": str(tmp_path / "archive")}}},
        }
    )
    return {"registry": registry, "archive": archive, "spec": spec, "tmp": tmp_path}


def reconcile(spec: ModelRetirementSpec, status: ModelRetirementStatus, stores: Stores) -> Outcome:
    body = {
        "metadata": {
            "name": "retire",
            "namespace": "ml",
            "uid": "u-1",
            "creationTimestamp": "2026-11-30T11:00:00Z",
        }
    }
    ctx = Context(
        body=body, applier=Applier(), logger=logging.getLogger("test"), stores=stores, status=status
    )  # type: ignore[arg-type]
    ctx.event = lambda *a, **k: None  # type: ignore[method-assign]
    return Retirement(spec, ctx, prometheus=None, now=NOW).run()


def written(status: ModelRetirementStatus, outcome: Outcome) -> ModelRetirementStatus:
    """The status the runtime writes from `outcome` (the kind's fields over the old ones)."""
    return status.model_copy(update={**outcome.status, "phase": outcome.phase})


def snapshot(store: LocalStore, prefix: str = "") -> dict[str, str]:
    return {k: hashlib.sha256(store.get_bytes(k)).hexdigest() for k in store.list(prefix)}


def drive(
    spec: ModelRetirementSpec, stores: Stores, lose: set[int] = frozenset(), limit: int = 30
) -> tuple[ModelRetirementStatus, Outcome]:
    """Reconcile until Retired or stalled; the status write of the reconciles numbered in `lose` is
    lost (the operator died after the step's side effects, before its record)."""
    status = ModelRetirementStatus()
    for n in range(limit):
        outcome = reconcile(spec, status, stores)
        if n in lose:
            continue
        status = written(status, outcome)
        if outcome.phase == "Retired" or outcome.state == "stalled":
            return status, outcome
    raise AssertionError(f"not done after {limit} reconciles: {outcome}")


def test_every_step_in_order_to_retired(world: dict[str, Any]) -> None:
    registry, archive = world["registry"], world["archive"]
    prefix = reg.version_prefix("bot", "2")
    before = snapshot(registry, prefix)
    status, outcome = drive(world["spec"], Stores({}))
    assert outcome.state == "ready" and outcome.reason == "Retired"
    assert [(s.name, s.state) for s in status.steps] == [("Drain", "Skipped")] + [
        (n, "Succeeded") for n in ("Archive", "Delete", "Dispose", "Report")
    ]
    assert all(archive.get_bytes(k) for k in before)  # every registry object is in the archive, same bytes
    assert {k: snapshot(archive, k)[k] for k in before} == before
    assert reg.read_tombstone(registry, "bot", "2") is not None and not list(
        registry.list(f"{prefix}/model/")
    )
    assert reg.versions(registry, "bot") == ["1"]
    assert archive.exists(f"{prefix}/postmortem/postmortem.md") and status.summary
    assert status.produced_by == ["ml/train"]


@pytest.mark.parametrize("lost", range(6))
def test_a_lost_status_write_after_any_step_finishes_the_same(world: dict[str, Any], lost: int) -> None:
    registry, archive = world["registry"], world["archive"]
    prefix = reg.version_prefix("bot", "2")
    before = snapshot(registry, prefix)
    status, outcome = drive(world["spec"], Stores({}), lose={lost})
    assert outcome.reason == "Retired", outcome
    assert {k: snapshot(archive, k)[k] for k in before} == before
    assert reg.read_tombstone(registry, "bot", "2") is not None
    assert [s.state for s in status.steps][1:] == ["Succeeded"] * 4


@pytest.mark.parametrize("writes", [0, 1, 3])
def test_storage_failing_mid_copy_deletes_nothing_and_resumes(world: dict[str, Any], writes: int) -> None:
    registry, archive, spec = world["registry"], world["archive"], world["spec"]
    before = snapshot(registry)
    failing = Stores({spec.archive.location.uri: FailingStore(archive, writes)})
    status = ModelRetirementStatus()
    for _ in range(3):
        outcome = reconcile(spec, status, failing)
        status = written(status, outcome)
    assert outcome.state == "reconciling" and outcome.reason == "ArchiveFailed", outcome
    assert "ConnectionResetError" in outcome.message
    assert snapshot(registry) == before  # 0 bytes deleted
    assert not archive.exists(f"{reg.version_prefix('bot', '2')}/ARCHIVE.json")
    for _ in range(10):  # storage is back: it resumes, and the rest follows
        outcome = reconcile(spec, status, Stores({}))
        status = written(status, outcome)
        if outcome.phase == "Retired":
            break
    assert outcome.reason == "Retired"


def test_an_archive_corrupted_after_verification_blocks_the_delete(world: dict[str, Any]) -> None:
    registry, spec = world["registry"], world["spec"]
    status = ModelRetirementStatus()
    while True:
        outcome = reconcile(spec, status, Stores({}))
        status = written(status, outcome)
        if outcome.phase == "Deleting":
            break
    before = snapshot(registry)
    key = f"{reg.version_prefix('bot', '2')}/model/weights.bin"
    (world["tmp"] / "archive" / key).write_bytes(b"bit rot")
    outcome = reconcile(spec, status, Stores({}))
    assert (
        outcome.state == "stalled" and outcome.reason == "ArchiveFailed" and "weights.bin" in outcome.message
    )
    assert snapshot(registry) == before


def test_an_alias_on_the_version_blocks_the_delete_until_it_moves(world: dict[str, Any]) -> None:
    registry, spec = world["registry"], world["spec"]
    reg.move_alias(registry, "bot", "staging", "2", by="user:test", reason="qa")
    before = snapshot(registry)
    status, outcome = drive(spec, Stores({}))
    assert outcome.reason == "AliasPointsAtVersion" and "staging" in outcome.message
    assert snapshot(registry) == before
    reg.move_alias(registry, "bot", "staging", "1", by="user:test", reason="qa")
    for _ in range(6):
        outcome = reconcile(spec, status, Stores({}))
        status = written(status, outcome)
    assert outcome.reason == "Retired"


@pytest.mark.parametrize("when", ["Archiving", "Deleting"])
def test_a_broken_receipt_stalls_the_retirement_naming_it(world: dict[str, Any], when: str) -> None:
    """A stored receipt that does not parse reads the same on every try: Stalled ArchiveFailed naming
    it, at the archive (which resumes from its receipt) or at the delete (which needs it), not retried
    every 30 s as a storage fault; nothing is deleted from the registry."""
    registry, spec = world["registry"], world["spec"]
    key = f"{reg.version_prefix('bot', '2')}/ARCHIVE.json"
    receipt = world["tmp"] / "archive" / key
    status = ModelRetirementStatus()
    if when == "Archiving":
        receipt.parent.mkdir(parents=True)
        receipt.write_text('{"model": "bot", "vers')
    while when == "Deleting":
        outcome = reconcile(spec, status, Stores({}))
        status = written(status, outcome)
        if outcome.phase == "Deleting":
            receipt.write_bytes(receipt.read_bytes()[:40])
            break
    before = snapshot(registry)
    for _ in range(5):
        outcome = reconcile(spec, status, Stores({}))
        status = written(status, outcome)
        if outcome.state == "stalled":
            break
    assert outcome.state == "stalled" and outcome.reason == "ArchiveFailed", outcome
    assert outcome.phase == when and f"the archive receipt {key}" in outcome.message, outcome.message
    assert "broken (not JSON" in outcome.message and "repair or remove" in outcome.message
    assert snapshot(registry) == before


def test_a_dry_run_refreshes_its_plan_as_a_poll_and_deletes_nothing(world: dict[str, Any]) -> None:
    """A dry run stays in DryRun, its plan read again every DRY_RUN_REFRESH_SECONDS: a poll, which
    the runtime paces when many retirements poll at once (runtime.poll_after)."""
    registry = world["registry"]
    before = snapshot(registry)
    spec = world["spec"].model_copy(update={"dry_run": True})
    outcome = reconcile(spec, ModelRetirementStatus(), Stores({}))
    assert (outcome.phase, outcome.poll, outcome.retry) == ("DryRun", True, False)
    assert outcome.requeue_after == DRY_RUN_REFRESH_SECONDS and outcome.status["plan"]
    assert snapshot(registry) == before


class Prometheus:
    """Requests still in flight at the drained deployment's replicas (llmops_gateway_inflight_requests)."""

    def __init__(self, inflight: float) -> None:
        self.inflight = inflight

    def query(self, promql: str) -> float:
        return self.inflight


@pytest.mark.parametrize(("started_ago", "left"), [(100, 200.0), (295, 5.0)])
def test_a_drain_waits_on_requests_in_flight_as_a_poll_never_past_its_grace_period(
    world: dict[str, Any], started_ago: int, left: float
) -> None:
    """Drained from `md` (nothing serves the version now) with 3 requests still in flight: looked at
    again every POLL_SECONDS as a poll (paced by the runtime when many retirements poll), with the
    grace period's end as a clock beside it, which pacing never passes; a grace period ending sooner
    than the poll is the next wake-up itself."""
    spec = ModelRetirementSpec.model_validate(
        {
            **world["spec"].model_dump(by_alias=True, exclude_none=True),
            "drain": {
                "mode": "Replace",
                "replacement": {"name": "bot", "version": "1"},
                "gracePeriodSeconds": 300,
            },
        }
    )
    status = ModelRetirementStatus(
        drain_start_time=NOW - dt.timedelta(seconds=started_ago), drained_deployments=["md"]
    )
    body = {"metadata": {"name": "retire", "namespace": "ml", "uid": "u-1"}}
    ctx = Context(
        body=body, applier=Applier(), logger=logging.getLogger("test"), stores=Stores({}), status=status
    )  # type: ignore[arg-type]
    ctx.event = lambda *a, **k: None  # type: ignore[method-assign]
    outcome = Retirement(spec, ctx, prometheus=Prometheus(3.0), now=NOW).run()
    assert (outcome.phase, outcome.state) == ("Draining", "reconciling") and "3 requests" in outcome.message
    if left > fold.POLL_SECONDS:
        assert (outcome.requeue_after, outcome.poll, outcome.clock) == (fold.POLL_SECONDS, True, left)
    else:
        assert (outcome.requeue_after, outcome.poll, outcome.clock) == (left, False, None)
