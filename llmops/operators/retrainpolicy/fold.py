"""What a RetrainPolicy's reconcile found -> phase, conditions and status. Pure.

| found                          | phase            | Ready / Reconciling | own conditions |
|--------------------------------|------------------|---------------------|----------------|
| a run's version in its canary  | Promoting        | Unknown / True      | Promoting=True |
| a run active                   | Training         | Unknown / True      |                |
| a winner waiting for approval  | AwaitingApproval | True / False        |                |
| spec.suspend                   | Suspended        | True / False        | Suspended=True |
| otherwise                      | Watching         | True / False        |                |

A problem with the target (no ModelDeployment, another model, not on the aliases) is Stalled; a
trigger that cannot be read (Prometheus away) stays Ready and says so in its trigger status.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from llmops import conditions
from llmops.api.retrainpolicy import Reason, RetrainPolicySpec, RetrainPolicyStatus, RunRecord, TriggerStatus
from llmops.operators.outcome import Outcome
from llmops.operators.retrainpolicy import names, plan

SUSPENDED, PROMOTING = "Suspended", "Promoting"


@dataclass(frozen=True)
class Found:
    """Everything the reconcile learned and did."""

    now: dt.datetime
    triggers: list[TriggerStatus]
    runs: list[RunRecord]  # newest first
    active: list[str]
    last_schedule_time: dt.datetime | None
    last_trigger: str | None
    champion: str | None
    last_promoted: str | None
    manual_request: str | None
    next_schedule: dt.datetime | None = None
    data_marker: str | None = None
    notes: list[str] = field(default_factory=list)  # a trigger that fired and did not start, ...


def fold(spec: RetrainPolicySpec, found: Found, evaluate_every: float) -> Outcome:
    """The outcome of one reconcile; reconciles again within `evaluate_every` seconds (a poll: the
    triggers are read again) or at the next schedule time (a clock), whichever comes first."""
    status = {
        "last_schedule_time": found.last_schedule_time,
        "last_trigger": found.last_trigger,
        "active": found.active,
        "triggers": found.triggers,
        "runs": found.runs[:32],
        "champion_version": found.champion,
        "last_promoted_version": found.last_promoted,
        "manual_request": found.manual_request,
        "data_marker": found.data_marker,
    }
    canary = next((r for r in found.runs if r.verdict == "Canary"), None)
    waiting = next((r for r in found.runs if r.verdict == "AwaitingApproval"), None)
    notes = "; ".join(found.notes)
    if canary is not None:
        state, phase, reason, message = "reconciling", "Promoting", Reason.PROMOTING, canary.message or ""
    elif found.active:
        state, phase, reason = "reconciling", "Training", Reason.TRAINING
        message = f"{', '.join(found.active)} training"
    elif waiting is not None:
        state, phase, reason, message = (
            "ready",
            "AwaitingApproval",
            Reason.AWAITING_APPROVAL,
            waiting.message or "",
        )
    elif spec.suspend:
        state, phase, reason, message = (
            "ready",
            "Suspended",
            Reason.SUSPENDED,
            "spec.suspend is true: no new runs",
        )
    else:
        state, phase, reason = "ready", "Watching", Reason.WATCHING
        message = _watching(found)
    if notes:
        message = f"{message}; {notes}" if message else notes
    own = (
        (SUSPENDED, spec.suspend, Reason.SUSPENDED if spec.suspend else "Running", _suspended(spec)),
        (
            PROMOTING,
            canary is not None,
            Reason.PROMOTING if canary else "Idle",
            canary.message or "" if canary else "no version in its canary",
        ),
    )
    # The triggers' evaluation is a poll (paced by the runtime when many policies poll at once); the
    # next schedule time is a clock, which pacing never pushes the policy past.
    outcome = Outcome(
        state, phase, reason, message[:4096], status, requeue_after=evaluate_every, conditions=own, poll=True
    )
    if found.next_schedule is not None:
        outcome = outcome.sooner(max((found.next_schedule - found.now).total_seconds(), 1.0))
    return outcome


def _suspended(spec: RetrainPolicySpec) -> str:
    return "spec.suspend is true: no new runs" if spec.suspend else "runs start when a trigger fires"


def _watching(found: Found) -> str:
    firing = [t.type for t in found.triggers if t.firing]
    if firing:
        return f"{', '.join(firing)} firing"
    if found.next_schedule is not None:
        return f"watching {len(found.triggers)} triggers; next schedule {found.next_schedule.isoformat()}"
    return f"watching {len(found.triggers)} triggers"


def stalled(reason: str, message: str, retry: float) -> Outcome:
    return Outcome("stalled", "Failed", reason, message, requeue_after=retry, retry=True)


# -- reading the runs back from their TrainingJobs ---------------------------------------------


def created(body: dict) -> dt.datetime:
    return conditions.parse_time(body["metadata"].get("creationTimestamp")) or dt.datetime.now(dt.UTC)


def last_schedule(before: RetrainPolicyStatus, children: list[dict], policy: dict) -> dt.datetime:
    """The last scheduled time a run started for: status, else the children's record, else creation."""
    marks = [(c["metadata"].get("annotations") or {}).get(names.SCHEDULED_TIME) for c in children]
    times = [before.last_schedule_time, *(conditions.parse_time(m) for m in marks)]
    known = [t for t in times if t is not None]
    return max(known) if known else created(policy)


def latest_annotation(children: list[dict], key: str) -> str | None:
    """`key` on the newest child that has it."""
    marked = [c for c in children if (c["metadata"].get("annotations") or {}).get(key)]
    if not marked:
        return None
    newest = max(marked, key=lambda c: c["metadata"].get("creationTimestamp") or "")
    return newest["metadata"]["annotations"][key]


def run_of(child: dict) -> plan.Run:
    phase = (child.get("status") or {}).get("phase")
    return plan.Run(
        name=child["metadata"]["name"],
        phase=phase,
        created=created(child),
        trigger=(child["metadata"].get("annotations") or {}).get(names.TRIGGER, ""),
        finished=phase in ("Succeeded", "Failed"),
    )


def records(children: list[dict], before: list[RunRecord]) -> list[RunRecord]:
    """One record per run, newest first: the children's facts over what status remembered."""
    known = {r.training_job: r for r in before}
    records = []
    for child in children:
        meta, status = child["metadata"], child.get("status") or {}
        annotations = meta.get("annotations") or {}
        old = known.pop(meta["name"], None)
        version = (status.get("modelVersion") or {}).get("version")
        update = {
            "training_job": meta["name"],
            "trigger": annotations.get(names.TRIGGER, old.trigger if old else "unknown"),
            "trigger_value": annotations.get(names.TRIGGER_VALUE),
            "start_time": created(child),
            "completion_time": conditions.parse_time(status.get("completionTime")),
            "phase": status.get("phase") or "Pending",
            "version": version,
        }
        record = old.model_copy(update=update) if old else RunRecord(**update, verdict="Training")
        records.append(record)
    records += list(known.values())  # runs whose TrainingJob is gone (history limits) stay recorded
    return sorted(records, key=lambda r: r.start_time or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)
