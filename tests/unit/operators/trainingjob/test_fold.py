"""The fold of runtime status plus run report into phase and conditions (the table in fold.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from llmops import conditions
from llmops.api.trainingjob import BaselineResult, GateResult, TrainingJobStatus
from llmops.operators import events, trainingjob
from llmops.operators.outcome import Outcome
from llmops.operators.trainingjob import fold
from llmops.workload import RunReport

from .support import NOW, PROGRESS, VERSION, report


def facts(status: dict | None, rep: RunReport | None = None, **kw: Any) -> fold.Facts:
    return fold.Facts(
        suspend=kw.pop("suspend", False),
        observation=fold.observe_rayjob(status),
        report=rep,
        report_error=kw.pop("report_error", None),
        where="RayJob tiny-0f5c2",
        work_dir="s3://models/jobs/ml/tiny/uid",
        **kw,
    )


@pytest.mark.parametrize(
    ("status", "rep", "phase", "state", "reason"),
    [
        (None, None, "Pending", "reconciling", "Created"),
        ({"jobDeploymentStatus": "Initializing"}, None, "Pending", "reconciling", "Starting"),
        (
            {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"},
            None,
            "Pending",
            "reconciling",
            "Starting",
        ),
        (
            {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
            report(progress=PROGRESS),
            "Running",
            "reconciling",
            "Training",
        ),
        ({"jobDeploymentStatus": "Retrying", "failed": 1}, None, "Running", "reconciling", "Training"),
        ({"jobDeploymentStatus": "Suspended"}, None, "Pending", "reconciling", "Resuming"),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
            report("Succeeded", model_version=VERSION),
            "Succeeded",
            "ready",
            "Succeeded",
        ),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"},
            report("Failed", failed_gates=["perplexity"], message="gates failed"),
            "Failed",
            "stalled",
            "GatesFailed",
        ),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"},
            report("Failed", message="spec.data.sources[0]: no rows left after filtering"),
            "Failed",
            "stalled",
            "TrainingFailed",
        ),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
            report(),
            "Failed",
            "stalled",
            "NoFinalReport",
        ),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, None, "Failed", "stalled", "Stopped"),
        (
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "past the deadline"},
            None,
            "Failed",
            "stalled",
            "DeadlineExceeded",
        ),
        (
            {"jobDeploymentStatus": "ValidationFailed", "message": "bad"},
            None,
            "Failed",
            "stalled",
            "ValidationFailed",
        ),
    ],
)
def test_fold_table(status: dict | None, rep: RunReport | None, phase: str, state: str, reason: str) -> None:
    outcome = fold.fold(facts(status, rep), NOW)
    assert (outcome.phase, outcome.state, outcome.reason) == (phase, state, reason), outcome.message
    finished = phase in ("Succeeded", "Failed")
    assert (outcome.status.get("completion_time") is not None) == finished


def test_fold_running_reports_progress() -> None:
    status = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "startTime": "2026-11-27T11:00:00Z"}
    outcome = fold.fold(facts(status, report(progress=PROGRESS, metrics={"perplexity": 12.5})), NOW)
    assert outcome.status["progress"].percent == 20
    assert outcome.status["start_time"] == dt.datetime(2026, 11, 27, 11, tzinfo=dt.UTC)
    assert outcome.status["evaluation"] == {"perplexity": 12.5}
    assert "step 40/200" in outcome.message and "loss 2.5" in outcome.message and "ETA 5m" in outcome.message


def test_fold_success_carries_version_gates_and_lineage() -> None:
    gates = [GateResult(metric="perplexity", operator="<=", threshold=60, value=31.2, passed=True)]
    rep = report("Succeeded", model_version=VERSION, gates=gates, metrics={"perplexity": 31.2})
    outcome = fold.fold(facts({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, rep), NOW)
    assert outcome.status["model_version"] == VERSION and outcome.status["gates"] == gates
    assert "tiny-llama:4" in outcome.message


def test_fold_carries_the_baselines_metrics_beside_the_candidates() -> None:
    baseline = BaselineResult(name="tiny-llama", version="3", metrics={"perplexity": 35.0})
    rep = report("Succeeded", model_version=VERSION, metrics={"perplexity": 31.2}, baseline=baseline)
    outcome = fold.fold(facts({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, rep), NOW)
    assert outcome.status["evaluation"] == {"perplexity": 31.2} and outcome.status["baseline"] == baseline
    status = TrainingJobStatus.model_validate(outcome.status).to_dict()
    assert status["baseline"] == {"name": "tiny-llama", "version": "3", "metrics": {"perplexity": 35.0}}
    # No baseline in the report: no status.baseline at all.
    plain = fold.fold(facts({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, report()), NOW)
    assert "baseline" not in plain.status


def status_of(body: dict) -> TrainingJobStatus:
    return TrainingJobStatus.model_validate(body["status"])


def announce(before_phase: str, before_reason: str, outcome: Outcome) -> tuple[str, str, bool] | None:
    """The Event the runtime posts for a TrainingJob's outcome after a phase and a (reconciling) reason."""
    before = TrainingJobStatus(
        phase=before_phase, conditions=conditions.standard([], "reconciling", before_reason, "", 1, NOW)
    )
    assert trainingjob.KIND.announcements is not None
    return events.announcement(trainingjob.KIND.announcements, before, outcome)


def test_fold_gate_failure_names_the_gate_and_where_the_artifacts_are() -> None:
    gates = [
        GateResult(metric="support-qa/exact_match", operator=">=", threshold=0.6, value=0.41, passed=False)
    ]
    rep = report("Failed", gates=gates, failed_gates=["support-qa/exact_match"])
    outcome = fold.fold(facts({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"}, rep), NOW)
    assert "support-qa/exact_match = 0.41, needs >= 0.6" in outcome.message
    assert "s3://models/jobs/ml/tiny/uid" in outcome.message
    assert announce("Running", "Training", outcome) == ("GateFailed", outcome.message, True)


def test_fold_waits_for_a_report_it_cannot_read_yet() -> None:
    ended = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    outcome = fold.fold(facts(ended, report_error="EndpointConnectionError", phase="Running"), NOW)
    assert (outcome.phase, outcome.state, outcome.reason) == ("Running", "reconciling", "ReportUnavailable")


def test_fold_suspend_and_queue() -> None:
    running = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    assert fold.fold(facts(running, suspend=True), NOW).phase == "Suspended"
    queued = fold.fold(facts({"jobDeploymentStatus": "Suspended"}, queue="research"), NOW)
    assert queued.reason == "Queued" and "research" in queued.message
    done = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    assert fold.fold(facts(done, report("Succeeded"), suspend=True), NOW).phase == "Succeeded"


def test_announcements_follow_phase_transitions() -> None:
    running = fold.fold(facts({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}), NOW)
    assert announce("Pending", "Created", running)[0] == "Started"
    assert announce("Running", "Training", running) is None
    done = fold.fold(
        facts({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, report("Succeeded")), NOW
    )
    assert announce("Running", "Training", done) == ("Succeeded", done.message, False)
    failed = fold.fold(facts({"jobDeploymentStatus": "Failed", "reason": "AppFailed"}), NOW)
    assert announce("Running", "Training", failed)[:1] == ("Failed",)


def test_observe_ray_job_details() -> None:
    info = {"status": "RUNNING", "message": "", "start_time": 1_795_000_000_000, "end_time": None}
    seen = fold.observe_ray_job(info)
    assert seen.state == "running" and seen.start_time.year == 2026
    assert fold.observe_ray_job(None).state == "none"
    assert fold.observe_ray_job({"status": "STOPPED"}).state == "stopped"


def test_finished_runs_stay_finished() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "m"}
    body = {
        "status": {
            "phase": "Succeeded",
            "completionTime": "2026-11-27T12:00:00Z",
            "message": "registered tiny:1",
            "conditions": [{**ready, "lastTransitionTime": "2026-11-27T12:00:00Z"}],
        }
    }
    assert fold.finished(status_of(body))
    kept = fold.kept(status_of(body))
    assert (kept.state, kept.phase, kept.reason) == ("ready", "Succeeded", "Succeeded")
    assert not fold.finished(
        status_of({"status": {"phase": "Failed"}})
    )  # a spec problem: re-checked on change


def test_running_shows_the_workloads_words_until_the_first_step():
    running = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    waiting = "waiting for 8 GPUs (2 workers x 4) for Ray Train; the Ray cluster has 0 (it may be scaling up)"
    before = report(progress={"stage": "Training", "total_steps": 200}, message=waiting)
    outcome = fold.fold(facts(running, before), NOW)
    assert (outcome.phase, outcome.reason) == ("Running", "Training")
    assert outcome.message == f"RayJob tiny-0f5c2: Training: {waiting}"
    stepping = fold.fold(facts(running, report(progress=PROGRESS, message="training: step 40/200")), NOW)
    assert "training: step" not in stepping.message and "step 40/200" in stepping.message
