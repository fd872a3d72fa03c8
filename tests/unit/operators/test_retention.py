"""Retention sweep decisions (llmops/operators/retention.py): listings with times in, deletions out.
The real deletion against MinIO is tests/workloads/test_retention_storage.py."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from llmops.api.common import ObjectStorageLocation, StoreRetention
from llmops.operators import retention
from llmops.storage import LocalStore, ObjectInfo

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
LOCATION = ObjectStorageLocation.model_validate({"local": {"path": "/data/samples"}})


def info(key: str, days_old: float, size: int = 10) -> ObjectInfo:
    return ObjectInfo(key, size, NOW - dt.timedelta(days=days_old))


def targets(**days: int | None) -> dict[str, retention.Target]:
    drift = LOCATION.child("drift-prompts")
    found = retention.deployment_targets(
        LOCATION, days.get("payload"), True, days.get("feedback"), drift, days.get("drift")
    )
    return {t.store: t for t in found}


PAYLOAD = "2026-11-01/101500-gw-7c9-payload-000001.jsonl"
FEEDBACK = "2026-11-01/101500-gw-7c9-feedback-000002.jsonl"
PROMPT = "2026-11-01/101500-gw-7c9-prompt-000003.jsonl"


def test_only_the_stores_own_keys_older_than_the_cutoff_go():
    listing = [
        info(PAYLOAD, 40),
        info("2026-11-28/101500-gw-7c9-payload-000009.jsonl", 2, size=7),
        info(FEEDBACK, 40),
        info("drift-prompts/" + PROMPT, 40),  # another store, below the same prefix
        info("2026-11-01/notes.txt", 400),  # not the gateway's
        info("exports/2026-11-01/101500-gw-payload-000001.jsonl", 400),  # not at the store's top
    ]
    payload = targets()["payloadSamples"]
    decision = retention.decide(listing, payload.owns, NOW - dt.timedelta(days=30))
    assert [i.key for i in decision.delete] == [PAYLOAD]
    assert (decision.kept_objects, decision.kept_bytes, decision.complete) == (1, 7, True)
    feedback = retention.decide(listing, targets()["feedback"].owns, NOW - dt.timedelta(days=30))
    assert [i.key for i in feedback.delete] == [FEEDBACK] and feedback.kept_objects == 0


def test_drift_samples_are_the_prompt_files_of_their_own_location():
    drift = targets()["driftSamples"]
    assert drift.location.uri == "/data/samples/drift-prompts"
    assert drift.owns(PROMPT) and not drift.owns(PAYLOAD) and not drift.owns(FEEDBACK)


def test_an_object_exactly_at_the_cutoff_is_kept():
    cutoff = NOW - dt.timedelta(days=30)
    decision = retention.decide([ObjectInfo(PAYLOAD, 1, cutoff)], targets()["payloadSamples"].owns, cutoff)
    assert decision.delete == () and decision.kept_objects == 1


def test_deletions_per_pass_are_bounded_oldest_first_and_the_rest_counted_kept():
    listing = [info(f"2026-10-{d:02d}/000000-gw-payload-{d:06d}.jsonl", 60 - d, size=d) for d in range(1, 11)]
    owns = targets()["payloadSamples"].owns
    decision = retention.decide(reversed(listing), owns, NOW - dt.timedelta(days=30), max_deleted=3)
    assert [i.key for i in decision.delete] == [i.key for i in listing[:3]]
    assert decision.kept_objects == 7 and decision.kept_bytes == sum(range(4, 11))
    assert not decision.complete


def test_listing_is_bounded():
    listing = (info(f"2026-10-01/000000-gw-payload-{n:06d}.jsonl", 60) for n in range(1_000_000))
    decision = retention.decide(listing, targets()["payloadSamples"].owns, NOW, max_listed=50)
    assert len(decision.delete) == 50 and not decision.complete


def test_work_folder_stores_leave_the_report_and_stage_summaries():
    work = LOCATION.child("jobs/team-a/job/uid-1")
    data, checkpoints = retention.work_dir_targets(work, 7, 3)
    keys = [
        "report.json",
        "stages/prepare.json",
        "ingest/part-0.parquet",
        "prepare/documents/train/0.parquet",
        "prepare/tokenizer/tokenizer.json",
        "train/checkpoint_000001/model.pt",
        "evaluate/results.json",
    ]
    assert [k for k in keys if data.owns(k)] == [
        "ingest/part-0.parquet",
        "prepare/documents/train/0.parquet",
        "prepare/tokenizer/tokenizer.json",
        "evaluate/results.json",
    ]
    assert [k for k in keys if checkpoints.owns(k)] == ["train/checkpoint_000001/model.pt"]


@pytest.mark.parametrize(
    ("data", "days", "problems"),
    [
        (None, {}, 0),
        (
            {"payloadSamplesDays": "30", "feedbackDays": "365", "unrelated": "x"},
            {"payloadSamples": 30, "feedback": 365},
            0,
        ),
        ({"payloadSamplesDays": "0", "checkpointsDays": "thirty"}, {}, 2),
    ],
)
def test_namespace_defaults(data, days, problems):
    found, bad = retention.namespace_defaults(data)
    assert found == days and len(bad) == problems


def test_a_gateway_file_is_as_old_as_its_key_says_when_that_is_earlier():
    """An erasure rewrites a sample file under its key: its storage time is new, its data is not."""
    rewritten = ObjectInfo(PAYLOAD, 1, NOW)
    assert retention.written(rewritten) == dt.datetime(2026, 11, 1, 10, 15, tzinfo=dt.UTC)
    decision = retention.decide([rewritten], targets()["payloadSamples"].owns, NOW - dt.timedelta(days=20))
    assert [i.key for i in decision.delete] == [PAYLOAD]
    work = ObjectInfo("ingest/part-0.parquet", 1, NOW)
    assert retention.written(work) == NOW
    bad_date = ObjectInfo("2026-13-40/101500-gw-payload-000001.jsonl", 1, NOW)
    assert retention.written(bad_date) == NOW


def _key(days_old: float, kind: str, seq: int) -> str:
    """A gateway key written `days_old` days ago (the sweep reads the key's time too)."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_old)
    return f"{at:%Y-%m-%d}/{at:%H%M%S}-gw-7c9-{kind}-{seq:06d}.jsonl"


def _write(root: Path, key: str, days_old: float, size: int = 5) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days_old)).timestamp()
    os.utime(path, (stamp, stamp))


def test_run_sweeps_when_due_counts_and_is_idempotent(tmp_path):
    """Spec retention wins over the namespace default; the namespace default covers the rest; deleted
    counts add up across passes; a second pass deletes nothing more; not due in between."""
    old_payload, old_feedback, old_prompt = (
        _key(40, "payload", 1),
        _key(40, "feedback", 2),
        _key(40, "prompt", 3),
    )
    _write(tmp_path, old_payload, 40, size=11)
    _write(tmp_path, _key(1, "payload", 4), 1, size=3)
    _write(tmp_path, old_feedback, 40, size=13)
    _write(tmp_path, "drift-prompts/" + old_prompt, 40)
    location = ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path)}})
    found = retention.deployment_targets(location, 30, True, None, location.child("drift-prompts"), None)
    schedule = retention.Schedule()
    common = {
        "identity": ("team-a", "ModelDeployment", "chat", "uid-1"),
        "defaults": lambda: {"feedbackDays": "400"},
        "open_store": lambda t: LocalStore(Path(t.location.local.path)),
        "schedule": schedule,
    }
    result, after, failed = retention.run(found, [], **common)
    assert not failed
    assert after is not None and after > 60
    by = {r.store: r for r in result}
    assert set(by) == {"payloadSamples", "feedback"}  # drift has no retention anywhere: kept
    assert (by["payloadSamples"].deleted_objects, by["payloadSamples"].deleted_bytes) == (1, 11)
    assert (by["payloadSamples"].kept_objects, by["payloadSamples"].source) == (1, "spec")
    assert (by["feedback"].deleted_objects, by["feedback"].retention_days) == (0, 400)
    assert not (tmp_path / old_payload).exists() and (tmp_path / "drift-prompts" / old_prompt).exists()

    assert retention.run(found, result, **common)[0] is None  # not due yet
    schedule.due.clear()
    again, _, _ = retention.run(found, result, **common)
    assert {r.store: r.deleted_objects for r in again} == {"payloadSamples": 1, "feedback": 0}


def test_a_failing_store_is_recorded_not_raised():
    found = retention.deployment_targets(LOCATION, 30, False, None, None, None)

    def broken(target):
        raise OSError("connection refused")

    result, after, failed = retention.run(
        found,
        [
            StoreRetention(
                store="payloadSamples", location="x", retention_days=30, source="spec", deleted_objects=4
            )
        ],
        identity=("ns", "ModelDeployment", "md", "uid-2"),
        defaults=lambda: None,
        open_store=broken,
        schedule=retention.Schedule(),
    )
    (status,) = result
    assert not status.complete and status.deleted_objects == 4
    assert (
        "spec.gateway.payloadSampling.destination" in status.message
        and "connection refused" in status.message
    )
    assert after == pytest.approx(retention.RETRY_SECONDS, abs=1) and failed


def test_no_targets_no_sweep():
    assert retention.run([], [], identity=("n", "k", "x", "u"), defaults=dict, open_store=None) == (
        None,
        None,
        False,
    )


def test_a_failed_pass_is_a_retry_to_pace_and_a_due_sweep_a_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reconciled` merges the next sweep into the owner's outcome: after a pass that could not sweep
    a store or read the namespace's ConfigMap, the 60 s wait is a retry (`Outcome.retry`: the runtime
    paces it with the kind's other retries, so one store down for thousands of objects does not
    bring them back together), also when the owner is reconciled again before it is due; after a pass
    that worked, the next sweep is a clock, and so is the next pass after one stopped at its bound;
    beside a retry the owner asked for, the sweep is kept in `clock`."""
    import uuid
    from types import SimpleNamespace

    from llmops.operators.outcome import Outcome

    def ctx(store: Any, configmap: Any = lambda *a: None) -> Any:
        uid = uuid.uuid4().hex  # the module's one Schedule: a new object each time
        return SimpleNamespace(
            body={"metadata": {"uid": uid}},
            namespace="ns",
            name=uid,
            applier=SimpleNamespace(get=configmap, kube=None),
            open_store=lambda location, credentials, field: store(),
        )

    def broken() -> LocalStore:
        raise OSError("connection refused")

    def unreadable(*_: Any) -> dict:
        raise OSError("the apiserver did not answer")

    def swept(store: Any, outcome: Outcome, **more: Any) -> Outcome:
        return retention.reconciled(
            store if isinstance(store, SimpleNamespace) else ctx(store, **more),
            "ModelDeployment",
            found,
            [],
            outcome,
        )

    ready = Outcome("ready", "Ready", "Ready", "")
    location = ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path)}})
    found = retention.deployment_targets(location, 30, False, None, None, None)
    failing = ctx(broken)
    failed = swept(failing, ready)
    assert failed.retry and failed.requeue_after == pytest.approx(retention.RETRY_SECONDS, abs=1)
    assert "connection refused" in failed.status["retention"][0].message
    again = swept(failing, ready)  # reconciled again (a child changed) before the pass is due
    assert again.retry and again.requeue_after <= retention.RETRY_SECONDS and "retention" not in again.status
    no_configmap = swept(lambda: LocalStore(tmp_path), ready, configmap=unreadable)
    assert no_configmap.retry and no_configmap.requeue_after == pytest.approx(retention.RETRY_SECONDS, abs=1)
    fine = swept(lambda: LocalStore(tmp_path), ready)
    assert not fine.retry and fine.requeue_after > retention.RETRY_SECONDS
    # A retry the owner asked for besides keeps the sweep as its clock.
    asked = Outcome("stalled", "Pending", "VersionNotFound", "", requeue_after=30.0, retry=True)
    later = swept(lambda: LocalStore(tmp_path), asked)
    assert (
        later.retry
        and later.requeue_after == 30.0
        and later.clock == pytest.approx(fine.requeue_after, abs=1)
    )
    # A pass that stopped at its bound (more expired than one pass deletes) goes on after 60 s: a clock.
    for seq in range(3):
        _write(tmp_path, _key(40, "payload", seq), 40)
    monkeypatch.setattr(retention, "MAX_DELETED", 1)
    bounded = swept(lambda: LocalStore(tmp_path), ready)
    (status,) = bounded.status["retention"]
    assert (status.deleted_objects, status.complete) == (1, False)
    assert not bounded.retry and bounded.requeue_after == pytest.approx(retention.RETRY_SECONDS, abs=1)


def test_the_schedule_forgets_objects_that_stopped_sweeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry overdue by more than an interval is an object no longer reconciled (deleted): it is
    dropped, with its failure, at most once an interval; the objects still sweeping keep theirs, and
    no answer changes (a dropped entry is due, as it was)."""
    monkeypatch.setenv("LLMOPS_RETENTION_SWEEP_SECONDS", "3600")
    schedule = retention.Schedule()
    start = 10_000.0
    for i in range(1_000):  # a fleet swept once, then deleted
        assert schedule.take(f"gone-{i}", start)
    schedule.soon("gone-0", start, failed=True)
    assert len(schedule.due) == 1_000 and schedule.failing == {"gone-0"}

    later = start + 3 * 3600
    assert schedule.take("alive", later - 3600)  # swept since, due again at `later`
    assert not schedule.take("alive", later - 1)
    assert "gone-1" in schedule.due  # dropped at most once an interval: not yet
    assert "gone-0" not in schedule.due and not schedule.retrying("gone-0")  # its retry long overdue
    assert schedule.take("alive", later + 1)  # due: reserved to later + 1 + 3600
    assert set(schedule.due) == {"alive"} and not schedule.failing
    assert schedule.seconds_left("gone-1", later + 1) == 1.0  # as when it was kept: due
    assert not schedule.take("alive", later + 2)
    assert schedule.take("gone-1", later + 2)  # back (recreated with the same uid): due, as before
