"""Fold what the runtime says (a RayJob's status, a Ray job's details) and what the workload reports
(report.json) into a TrainingJob's phase, conditions and status. Pure functions.

The rule: the runtime decides whether the run is over; the workload's report decides how it ended.
While Ray runs, the report only adds progress (a retried attempt rewrites it from Running). Once Ray
says the job ended, a final report (Succeeded or Failed) is the verdict, because only the workload
knows whether its gates passed and which version it registered; without one, Ray's own verdict
stands and the message says what is missing.

| runtime says                                   | report               | phase      | conditions        |
|------------------------------------------------|----------------------|------------|-------------------|
| nothing yet (no status, New)                   | -                    | Pending    | Reconciling=True  |
| Initializing, Waiting, Ray job PENDING          | -                    | Pending    | Reconciling=True  |
| Suspended/Suspending, spec.suspend false        | -                    | Pending    | Reconciling=True  |
|   (a Kueue queue: waiting for admission)        |                      |            |                   |
| anything not finished, spec.suspend true        | -                    | Suspended  | Reconciling=True  |
| Running + RUNNING, Retrying                     | progress, message    | Running    | Reconciling=True  |
| finished (Complete/Failed, SUCCEEDED/FAILED)     | Succeeded            | Succeeded  | Ready=True        |
| finished                                        | Failed, failed gates | Failed     | Stalled=True      |
| finished                                        | Failed               | Failed     | Stalled=True      |
| SUCCEEDED                                       | none or Running      | Failed     | Stalled=True      |
| FAILED, Failed (DeadlineExceeded, ...)          | none or Running      | Failed     | Stalled=True      |
| STOPPED, spec.suspend false                     | none or Running      | Failed     | Stalled=True      |
| finished, report unreadable                     | error                | (kept)     | Reconciling=True  |
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from llmops import conditions
from llmops.api.trainingjob import EventReason, Progress, Reason, TrainingJobStatus
from llmops.operators.outcome import Outcome
from llmops.workload import RunReport

State = Literal["none", "pending", "running", "suspended", "succeeded", "failed", "stopped"]
FINISHED: tuple[State, ...] = ("succeeded", "failed", "stopped")
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Observation:
    """What the runtime says about the run, the same for both runtimes."""

    state: State
    detail: str = ""  # the runtime's own words, for messages
    reason: str = ""  # the runtime's failure reason (KubeRay status.reason), CamelCase
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    attempts_failed: int = 0


def _epoch_ms(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC).replace(microsecond=0)
    except (TypeError, ValueError, OverflowError):
        return None


def rayjob_fingerprint(body: dict) -> tuple:
    """What of a RayJob matters to its TrainingJob (its reconcile re-runs when this changes)."""
    status = body.get("status") or {}
    return tuple(
        status.get(k)
        for k in ("jobDeploymentStatus", "jobStatus", "startTime", "endTime", "reason", "failed", "succeeded")
    )


def observe_rayjob(status: dict | None) -> Observation:
    """A KubeRay RayJob's status (ray.io/v1), normalised."""
    status = status or {}
    deployment = status.get("jobDeploymentStatus") or ""
    job = status.get("jobStatus") or ""
    detail = status.get("message") or ""
    times = {
        "start_time": conditions.parse_time(status.get("startTime")),
        "end_time": conditions.parse_time(status.get("endTime")),
    }
    failed = int(status.get("failed") or 0)
    if deployment in ("", "New"):
        return Observation("none", **times)
    if deployment in ("Initializing", "Waiting"):
        return Observation("pending", detail or "starting the Ray cluster", **times)
    if deployment in ("Suspending", "Suspended"):
        return Observation("suspended", detail, **times)
    if deployment == "Retrying":
        return Observation(
            "running",
            detail or "retrying after a failed attempt",
            "Retrying",
            attempts_failed=failed,
            **times,
        )
    if deployment == "Running":
        if job == "RUNNING":
            return Observation("running", detail, attempts_failed=failed, **times)
        return Observation("pending", detail or "the Ray job is submitted and waiting to start", **times)
    if deployment == "Complete":
        state: State = {"SUCCEEDED": "succeeded", "STOPPED": "stopped"}.get(job, "failed")
        return Observation(state, detail, status.get("reason") or "", **times)
    if deployment == "ValidationFailed":
        return Observation("failed", detail or "KubeRay refused the RayJob", "ValidationFailed", **times)
    # Failed: DeadlineExceeded, SubmissionFailed, AppFailed, ...
    return Observation("failed", detail, status.get("reason") or "", **times)


def observe_ray_job(info: dict | None) -> Observation:
    """A Ray Jobs API JobDetails (as a dict), normalised."""
    if not info:
        return Observation("none")
    state: State = {
        "PENDING": "pending",
        "RUNNING": "running",
        "SUCCEEDED": "succeeded",
        "FAILED": "failed",
        "STOPPED": "stopped",
    }.get(str(info.get("status") or ""), "pending")
    return Observation(
        state,
        str(info.get("message") or ""),
        str(info.get("error_type") or ""),
        start_time=_epoch_ms(info.get("start_time")),
        end_time=_epoch_ms(info.get("end_time")),
    )


@dataclass(frozen=True)
class Facts:
    """Everything one fold looks at."""

    suspend: bool
    observation: Observation
    report: RunReport | None
    report_error: str | None  # why the report could not be read (never a secret)
    where: str  # "RayJob x" or "Ray job <id> at <address>", for messages
    work_dir: str  # URI of the work folder
    queue: str | None = None
    phase: str | None = None  # the phase before this fold
    extra: dict[str, Any] = field(default_factory=dict)  # status fields the caller adds


def progress(report: RunReport | None) -> Progress | None:
    if report is None:
        return None
    p = report.progress
    if p.percent is None and p.step is not None and p.total_steps:
        p = p.model_copy(update={"percent": max(0, min(100, int(100 * p.step / p.total_steps)))})
    return p


def describe_progress(p: Progress | None) -> str:
    if p is None:
        return ""
    parts = []
    if p.stage:
        parts.append(p.stage)
    if p.step is not None:
        parts.append(f"step {p.step}/{p.total_steps}" if p.total_steps else f"step {p.step}")
    if p.percent is not None:
        parts.append(f"{p.percent}%")
    if p.epoch is not None:
        parts.append(f"epoch {p.epoch:g}")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4g}")
    if p.tokens_per_second is not None:
        parts.append(f"{p.tokens_per_second:.0f} tokens/s")
    if p.eta_seconds is not None:
        parts.append(f"ETA {_duration(p.eta_seconds)}")
    return ", ".join(parts)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def describe_gates(report: RunReport) -> str:
    failed = [g for g in report.gates if not g.passed]
    if failed:
        return "; ".join(g.describe() for g in failed)
    return ", ".join(report.failed_gates)


def _results(report: RunReport | None) -> dict[str, Any]:
    if report is None:
        return {}
    out: dict[str, Any] = {"evaluation": dict(report.metrics), "gates": list(report.gates)}
    if report.baseline is not None:
        out["baseline"] = report.baseline
    if report.model_version is not None:
        out["model_version"] = report.model_version
    if report.lineage is not None:
        out["lineage"] = report.lineage
    return out


def fold(facts: Facts, now: dt.datetime) -> Outcome:
    """The TrainingJob's phase and status from what the runtime and the workload say (see the table)."""
    obs, report = facts.observation, facts.report
    status: dict[str, Any] = {
        **facts.extra,
        "work_dir": facts.work_dir,
        "start_time": obs.start_time,
        "progress": progress(report),
        **_results(report),
    }
    if obs.state in FINISHED and not (obs.state == "stopped" and facts.suspend):
        if facts.report_error and report is None:
            return Outcome(
                "reconciling",
                facts.phase or "Running",
                Reason.REPORT_UNAVAILABLE,
                f"{facts.where} has ended; reading its report failed ({facts.report_error}); retrying",
                status,
            )
        status["completion_time"] = obs.end_time or now.replace(microsecond=0)
        return _finished(facts, status)
    if facts.suspend:
        return Outcome(
            "reconciling",
            "Suspended",
            Reason.SUSPENDED,
            "spec.suspend is true: nothing runs; set it to false to continue from the last checkpoint",
            status,
        )
    if obs.state == "running":
        line = describe_progress(status["progress"]) or "started"
        if report is not None and report.message and report.progress.step is None:
            line += f": {report.message}"  # before the first step: what the workload is doing or awaits
        if obs.reason == "Retrying":
            line = f"retrying after {obs.attempts_failed or 1} failed attempt(s); {line}"
        if facts.report_error:
            line += f" (progress unavailable: {facts.report_error})"
        return Outcome("reconciling", "Running", Reason.TRAINING, f"{facts.where}: {line}", status)
    if obs.state == "none":
        return Outcome(
            "reconciling",
            "Pending",
            Reason.CREATED,
            f"{facts.where} created; waiting for it to start",
            status,
        )
    if obs.state == "suspended":
        if facts.queue:
            message = f"{facts.where} is queued: waiting for Kueue to admit it from queue {facts.queue}"
            return Outcome("reconciling", "Pending", Reason.QUEUED, message, status)
        return Outcome("reconciling", "Pending", Reason.RESUMING, f"{facts.where} is resuming", status)
    return Outcome(
        "reconciling", "Pending", Reason.STARTING, f"{facts.where}: {obs.detail or 'starting'}", status
    )


def _finished(facts: Facts, status: dict[str, Any]) -> Outcome:
    obs, report = facts.observation, facts.report
    if report is not None and report.phase == "Succeeded":
        version = report.model_version
        what = f"registered {version.name}:{version.version} ({version.uri})" if version else "succeeded"
        if version and not report.gates:
            what += (
                " as ungated: spec.evaluation declares no gates, so a ModelDeployment serves it only"
                " with spec.allowUngated: true"
            )
        return Outcome("ready", "Succeeded", Reason.SUCCEEDED, what, status)
    if report is not None and report.phase == "Failed":
        if report.failed_gates or any(not g.passed for g in report.gates):
            message = (
                f"evaluation gates failed: {describe_gates(report)}; nothing was registered; the "
                f"trained model and the evaluation report stay in {facts.work_dir}"
            )
            return Outcome("stalled", "Failed", Reason.GATES_FAILED, message, status)
        return Outcome(
            "stalled", "Failed", Reason.TRAINING_FAILED, report.message or f"{facts.where} failed", status
        )
    if obs.state == "succeeded":
        message = (
            f"{facts.where} succeeded but the workload left no final report in {facts.work_dir}/report.json: "
            "check that the trainer image runs `python -m llmops.training.run` and can write there"
        )
        return Outcome("stalled", "Failed", Reason.NO_FINAL_REPORT, message, status)
    if obs.state == "stopped":
        message = (
            f"{facts.where} was stopped outside llmops; delete and re-create the TrainingJob to run it again"
        )
        return Outcome("stalled", "Failed", Reason.STOPPED, message, status)
    reason = obs.reason if obs.reason.isalnum() and obs.reason[:1].isalpha() else Reason.RAY_JOB_FAILED
    detail = f": {obs.detail}" if obs.detail else ""
    return Outcome("stalled", "Failed", reason, f"{facts.where} failed{detail}", status)


def warning_reason(outcome: Outcome) -> str:
    """The reason of the Warning a stalled outcome is announced with (operators.runtime.Announcements).

    A run that ended Failed says GateFailed (its gates failed) or Failed; a job stalled before it
    ran says the condition's reason (CredentialsNotFound, BaseModelNotFound, ...).
    """
    if outcome.phase == "Failed":
        return EventReason.GATE_FAILED if outcome.reason == Reason.GATES_FAILED else EventReason.FAILED
    return outcome.reason


# The Normal Events of a TrainingJob: the phase it enters -> the Event's reason.
PHASE_EVENTS = {
    "Running": EventReason.STARTED,
    "Succeeded": EventReason.SUCCEEDED,
    "Suspended": EventReason.SUSPENDED,
}


def finished(status: TrainingJobStatus) -> bool:
    """A run that has ended stays ended: its status is the record (re-create the object to rerun)."""
    return status.phase in TERMINAL_PHASES and status.completion_time is not None


def kept(status: TrainingJobStatus) -> Outcome:
    """The outcome of a run that has ended, as its status already says."""
    ready = conditions.get_condition(status.conditions, conditions.READY)
    phase = status.phase
    assert phase is not None
    return Outcome(
        "ready" if phase == "Succeeded" else "stalled",
        phase,
        (ready.reason if ready is not None else None) or phase,
        status.message or "",
    )
