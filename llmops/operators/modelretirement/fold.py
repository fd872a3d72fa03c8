"""What a ModelRetirement's reconcile found -> phase, conditions and status. Pure.

| found                                   | phase            | Ready / Reconciling | reason           |
|-----------------------------------------|------------------|---------------------|------------------|
| spec.dryRun, the plan written            | DryRun           | True / False        | DryRun           |
| requireApproval, no approval yet         | AwaitingApproval | False / True        | AwaitingApproval |
| a step running (its name, as a verb)     | Draining, ...    | False / True        | Draining, ...    |
| a step that cannot go on as specified    | (the step's)     | False, Stalled=True | the problem      |
| every step Succeeded or Skipped          | Retired          | True / False        | Retired          |

A step that failed in a way that heals by itself (storage away, a copy that did not verify) stays
Reconciling with the reason and is retried; nothing later runs before it succeeds.
"""

from __future__ import annotations

import datetime as dt

from llmops.api.modelretirement import Reason, StepStatus
from llmops.operators.outcome import Outcome

PHASE_OF_STEP = {
    "Drain": "Draining",
    "Archive": "Archiving",
    "Delete": "Deleting",
    "Dispose": "Disposing",
    "Report": "Reporting",
}
REASON_OF_STEP = {
    "Drain": Reason.DRAINING,
    "Archive": Reason.ARCHIVING,
    "Delete": Reason.DELETING,
    "Dispose": Reason.DISPOSING,
    "Report": Reason.REPORTING,
}
POLL_SECONDS = 10.0
STALLED_RETRY_SECONDS = 60.0


def stalled(reason: str, message: str, phase: str = "Failed", status: dict | None = None) -> Outcome:
    return Outcome(
        "stalled",
        phase,
        reason,
        message,
        status=status or {},
        requeue_after=STALLED_RETRY_SECONDS,
        retry=True,
    )


def running(
    step: str,
    message: str,
    status: dict,
    *,
    reason: str | None = None,
    requeue: float = 0.5,
    retry: bool = False,
    poll: bool = False,
) -> Outcome:
    """A step in progress: reconcile again soon (`requeue`: right away after a step finished, or
    POLL_SECONDS with `poll` while waiting on others; `retry`: after a failure that heals). The runtime
    paces retries and polls when many objects ask for them (runtime.retry_after, poll_after)."""
    return Outcome(
        "reconciling",
        PHASE_OF_STEP[step],
        reason or REASON_OF_STEP[step],
        message,
        status=status,
        requeue_after=requeue,
        retry=retry,
        poll=poll,
    )


def retired(steps: list[StepStatus], status: dict) -> Outcome:
    done = [f"{s.name.lower()}: {s.message}" for s in steps if s.message]
    message = "retired; " + "; ".join(done) if done else "retired"
    return Outcome("ready", "Retired", Reason.RETIRED, message[:4096], status=status)


def step(
    name: str,
    state: str,
    before: StepStatus | None,
    now: dt.datetime,
    message: str | None = None,
    objects: int | None = None,
    size: int | None = None,
) -> StepStatus:
    """The step's new record: its start time kept from `before`, a completion time once it ends."""
    start = before.start_time if before is not None and before.start_time else now
    ended = state in ("Succeeded", "Failed", "Skipped")
    return StepStatus(
        name=name,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        start_time=start,
        completion_time=now if ended else None,
        objects=objects,
        bytes=size,
        message=message[:256] if message else None,
    )
