"""Every Event goes through one path (llmops/operators/auditing.py): an audit record, then the Event.

The audit log is real (a local directory); only `kopf.event`, the post to the apiserver, is caught
here (tests/cluster/test_audit.py sees the Events on a real apiserver).
"""

from __future__ import annotations

import logging
from pathlib import Path

import kopf
import pytest
import yaml

from llmops.api import MODEL_DEPLOYMENT, TRAINING_JOB
from llmops.api.modeldeployment import ModelDeploymentStatus
from llmops.api.trainingjob import ModelVersionRef
from llmops.audit import AuditLog
from llmops.operators import auditing, runtime
from llmops.operators.admission import person_asks
from llmops.operators.auditing import REQUESTED_BY, Auditor, Subject, action_name
from llmops.operators.events import Announcements
from llmops.operators.modeldeployment import serving_changes
from llmops.operators.outcome import Outcome
from llmops.operators.runtime import Context, Kind
from llmops.operators.trainingjob import audit_subject, registrations
from llmops.storage import LocalStore, ObjectStore

EXAMPLES = Path(__file__).parents[3] / "examples"
SPEC = yaml.safe_load((EXAMPLES / "trainingjob-full.yaml").read_text())["spec"]


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    seen: list[dict] = []
    monkeypatch.setattr(kopf, "event", lambda body, **kw: seen.append(kw))
    return seen


def body(kind: str = "TrainingJob", annotations: dict | None = None, status: dict | None = None) -> dict:
    return {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "tiny", "namespace": "ml", "uid": "u-1", "generation": 2,
                     "annotations": annotations or {}},
        "spec": SPEC,
        "status": status or {},
    }  # fmt: skip


def test_action_names() -> None:
    assert action_name("ModelDeployment", "AliasMoved") == "modeldeployment.alias_moved"
    assert action_name("TrainingJob", "Started") == "trainingjob.started"


def test_a_post_writes_the_record_then_the_event_that_mirrors_it(tmp_path: Path, posted: list) -> None:
    log = AuditLog(LocalStore(tmp_path))
    auditor = Auditor(log, "system:serviceaccount:llmops:operator")
    obj = body(annotations={REQUESTED_BY: "alice"})
    record = auditor.post(obj, "Promoted", "bot:3 promoted", subject=Subject("bot", "3", {"m": "ab" * 32}))
    assert record is not None
    d = record.data
    assert (d.actor.type, d.actor.name, d.actor.on_behalf_of) == (
        "operator", "system:serviceaccount:llmops:operator", "alice",
    )  # fmt: skip
    assert (d.action, d.object.kind, d.object.uid, d.model, d.version) == (
        "trainingjob.promoted", "TrainingJob", "u-1", "bot", "3",
    )  # fmt: skip
    assert d.details["message"] == "bot:3 promoted" and record.subject == "ml/trainingjob/tiny"
    (event,) = posted
    assert event["reason"] == "Promoted" and event["type"] == "Normal"
    assert event["message"] == f"bot:3 promoted [audit 1 {d.hash[:12]}]"
    assert log.verify().ok


def test_a_persons_own_action_names_them(tmp_path: Path) -> None:
    log = AuditLog(LocalStore(tmp_path))
    record = Auditor(log, "op").record_person(body(annotations={REQUESTED_BY: "alice"}), "erin",
                                              "DeletionRequested", "erin asked to delete it")  # fmt: skip
    assert record is not None and record.source == "/llmops/admission"
    assert (record.data.actor.type, record.data.actor.name, record.data.actor.on_behalf_of) == (
        "user",
        "erin",
        None,
    )
    assert record.data.action == "trainingjob.deletion_requested"
    assert Auditor(None).record_person(body(), "erin", "DeletionRequested", "x") is None


def test_without_storage_events_still_go_out_and_the_log_says_so_once(posted: list, caplog) -> None:
    auditor = Auditor(None)
    with caplog.at_level(logging.WARNING):
        assert auditor.post(body(), "Started", "running") is None
        assert auditor.post(body(), "Succeeded", "done") is None
    assert [e["message"] for e in posted] == ["running", "done"]
    assert sum("auditing to storage is off" in r.message for r in caplog.records) == 1


class Unwritable(LocalStore):
    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        raise OSError("disk gone")


def test_a_failed_write_never_stops_the_event(tmp_path: Path, posted: list) -> None:
    store: ObjectStore = Unwritable(tmp_path)
    before = auditing.WRITE_FAILURES.labels("TrainingJob")._value.get()
    assert Auditor(AuditLog(store)).post(body(), "Started", "running") is None
    assert [e["message"] for e in posted] == ["running"]
    assert auditing.WRITE_FAILURES.labels("TrainingJob")._value.get() == before + 1


def test_the_runtime_audits_its_announcements_with_the_kinds_subject(tmp_path: Path, posted: list) -> None:
    """Through the real reconcile path: a phase Event and a transition Event, each a record whose
    model and version come from the object with its new status."""
    log = AuditLog(LocalStore(tmp_path))
    registered = ModelVersionRef(name="support-bot", version="4", uri="s3://r/models/support-bot/4")
    outcome = Outcome("ready", "Succeeded", "Succeeded", "done", status={"model_version": registered})
    kind = Kind(
        TRAINING_JOB,
        lambda spec, ctx: outcome,
        announcements=Announcements(phases={"Succeeded": "Succeeded"}, transitions=registrations),
        audit_subject=audit_subject,
    )
    patch = kopf.Patch()
    runtime.reconcile(kind, body(status={"phase": "Running"}), None, logging.getLogger("t"), patch,
                      auditor=Auditor(log, "op"))  # type: ignore[arg-type]  # fmt: skip
    records = list(log.all())
    assert [r.data.action for r in records] == ["trainingjob.succeeded", "trainingjob.version_registered"]
    assert {(r.data.model, r.data.version) for r in records} == {("support-bot", "4")}
    assert [e["reason"] for e in posted] == ["Succeeded", "VersionRegistered"]
    # A Context's own Events (a kind's domain Events) take the same path, explicit subject first.
    ctx = Context(body=body(), applier=None, logger=logging.getLogger("t"),  # type: ignore[arg-type]
                  auditor=Auditor(log, "op"), subject=audit_subject)  # fmt: skip
    ctx.event("Triggered", "started run-1", model="other", details={"trainingJob": "run-1"})
    last = list(log.all())[-1].data
    assert (last.model, last.version, last.details["trainingJob"]) == ("other", None, "run-1")
    assert log.verify().ok and log.verify().count == 3


def test_serving_changes_say_where_and_when_a_version_serves() -> None:
    def versions(*vs: tuple[str, str, int]) -> list[dict]:
        return [{"name": "bot", "version": v, "role": r, "weight": w} for v, r, w in vs]

    before = ModelDeploymentStatus.model_validate({"versions": versions(("1", "stable", 100))})
    after = {"versions": versions(("1", "stable", 90), ("2", "canary", 10))}
    assert serving_changes(before, after) == [
        ("RolledOut", "bot:2 serves 10% of requests as canary", False, {"model": "bot", "version": "2"})
    ]
    done = {"versions": versions(("2", "stable", 100), ("1", "previous", 0))}
    during = ModelDeploymentStatus.model_validate(after)
    assert serving_changes(during, done) == [
        ("ServingStopped", "bot:1 receives no more requests", False, {"model": "bot", "version": "1"})
    ]
    assert serving_changes(ModelDeploymentStatus(), {"versions": []}) == []
    assert MODEL_DEPLOYMENT.kind == "ModelDeployment"


def test_person_asks_on_create_spec_and_llmops_annotations_only() -> None:
    old = {"spec": {"a": 1}, "metadata": {"annotations": {"llmops.io/last-handled-configuration": "x"}}}
    assert person_asks("CREATE", None, old)
    assert not person_asks("UPDATE", old, old)
    assert person_asks("UPDATE", old, {**old, "spec": {"a": 2}})
    for key in ("retrain.llmops.io/requested", "retrain.llmops.io/approve", REQUESTED_BY):
        assert person_asks("UPDATE", old, {**old, "metadata": {"annotations": {key: "1"}}}), key
    # kopf's bookkeeping and other annotations are not a person's request
    bookkeeping = {**old, "metadata": {"annotations": {"llmops.io/last-handled-configuration": "y"}}}
    assert not person_asks("UPDATE", old, bookkeeping)
    assert not person_asks("UPDATE", old, {**old, "metadata": {"annotations": {"team": "a"}}})
    assert not person_asks("DELETE", old, None)
