"""What a TrainingJob's reconcile does next, decided from facts already read. Pure functions.

Which run (both runtimes). A run is fixed once it has started: later changes to what it trains do not
reach it (the lifecycle fields still do). Before it starts, a lifecycle-only change keeps the run as
it is; any other change makes a new one.

| earlier run (from the entrypoint) | started | trains the same | run                                   |
|-----------------------------------|---------|-----------------|---------------------------------------|
| none                              | -       | -               | new                                   |
| yes                               | yes     | any             | the earlier one (a note if not same)  |
| yes                               | no      | yes             | the earlier one                       |
| yes                               | no      | no              | new                                   |

A new run pins `spec.model.base` to the version the earlier run pinned when the base has the same
name (`pinned_base`), otherwise to what the registry resolves now; `spec.evaluation.baseline` alike
(`pinned_baseline`), and a distill run's teacher (`pinned_teacher`), so the champion a run is
compared with, or the teacher it learns from, cannot move under it.

The Ray Jobs API (runtime rayJobsAPI), one action per step; the reconcile acts, observes the job it
acted on, and asks again (a job that fails on submission is retried in the same reconcile). First
match wins:

| Ray job                       | suspend | also                               | action                      |
|-------------------------------|---------|------------------------------------|-----------------------------|
| none                          | true    |                                    | hold: nothing is submitted  |
| none                          | false   |                                    | submit: first               |
| PENDING, RUNNING              | true    |                                    | stop; fold it as STOPPED    |
| STOPPED                       | false   | phase was Suspended                | submit: resumed             |
| PENDING, RUNNING, started     |         | ran > activeDeadlineSeconds        | stop; fold: DeadlineExceeded|
| FAILED (not DeadlineExceeded) |         | report not Failed, retries < limit | submit: retried             |
| anything else                 |         |                                    | fold                        |

`suspend` is spec.suspend; the deadline and the limit are spec.runtime.activeDeadlineSeconds and
spec.runtime.backoffLimit. The ids (names.py): first `submission_id`, resumed `resumed_submission`,
retried `retried_submission`. A workload that reports Failed gave its verdict (a gate, bad data):
that is never retried.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Literal

from llmops.api.trainingjob import Reason, TrainingJobSpec
from llmops.operators.trainingjob import builders, names
from llmops.operators.trainingjob.fold import Observation
from llmops.registry import Content
from llmops.workload import JobIdentity, RunReport, TrainingRun

ACTIVE = ("pending", "running")


# -- which run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunChoice:
    """The run to keep (`run`), or None when a new one is to be made; `changed`: the spec moved on."""

    run: TrainingRun | None
    changed: bool = False


def choose_run(spec: TrainingJobSpec, earlier: TrainingRun | None, started: bool) -> RunChoice:
    """Keep the earlier run or make a new one (the first table of the module docstring)."""
    if earlier is None:
        return RunChoice(None)
    same = builders.same_training(earlier.spec, spec)
    if started:
        return RunChoice(earlier, changed=not same)
    return RunChoice(earlier if same else None)


def pinned_base(spec: TrainingJobSpec, earlier: TrainingRun | None) -> str | None:
    """The base version an earlier run pinned, when it names the same base model; else None."""
    pinned = earlier.spec.model.base if earlier else None
    if spec.model.base is None or pinned is None or pinned.name != spec.model.base.name:
        return None
    return pinned.version or None


def not_quantizable(content: Content) -> str | None:
    """Why a version holding `content` cannot be the parent of a quantize run, or None when it can.

    llm-compressor quantizes a full model of dense weights: a version already quantized (its
    manifest's content.quantization) or holding only a LoRA adapter (content.kind adapter) would fail
    inside it, after data preparation, so the operator says so before anything runs.
    """
    if content.kind != "model":
        return "it holds a LoRA adapter only (content.kind adapter), not a full model"
    if content.quantization is not None:
        q = content.quantization
        what = " ".join(x for x in (q.method, q.format, q.scheme) if x)
        return f"it is already quantized ({what})"
    return None


def pinned_baseline(spec: TrainingJobSpec, earlier: TrainingRun | None) -> str | None:
    """The baseline version an earlier run pinned, when it names the same model; else None."""
    wanted = spec.evaluation.baseline if spec.evaluation else None
    pinned = earlier.spec.evaluation.baseline if earlier and earlier.spec.evaluation else None
    if wanted is None or pinned is None or pinned.name != wanted.name:
        return None
    return pinned.version or None


def pinned_teacher(spec: TrainingJobSpec, earlier: TrainingRun | None) -> str | None:
    """The teacher version an earlier run pinned, when it names the same model; else None."""
    wanted = spec.method.distillation.teacher if spec.method.distillation else None
    pinned = (
        earlier.spec.method.distillation.teacher if earlier and earlier.spec.method.distillation else None
    )
    if wanted is None or pinned is None or pinned.name != wanted.name:
        return None
    return pinned.version or None


def new_run(
    spec: TrainingJobSpec,
    job: JobIdentity,
    base_version: str | None,
    code_version: str,
    baseline_version: str | None = None,
    teacher_version: str | None = None,
) -> TrainingRun:
    """The run for the current spec; `base_version` (required with `spec.model.base`),
    `baseline_version` (required with `spec.evaluation.baseline`) and `teacher_version` (required
    with `spec.method.distillation`) are pinned."""
    if spec.model.base is not None:
        assert base_version is not None, "resolve spec.model.base first"
        spec = builders.pin_base(spec, base_version)
    if spec.evaluation is not None and spec.evaluation.baseline is not None:
        assert baseline_version is not None, "resolve spec.evaluation.baseline first"
        spec = builders.pin_baseline(spec, baseline_version)
    if spec.method.distillation is not None:
        assert teacher_version is not None, "resolve spec.method.distillation.teacher first"
        spec = builders.pin_teacher(spec, teacher_version)
    return builders.training_run(spec, job, code_version)


# -- the Ray Jobs API -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One step on the Ray Jobs API (the second table of the module docstring).

    `kind`: "hold" (no job, none to submit), "submit" (`submission`, for `why`), "stop"
    (`submission`; then fold `observation`, what Ray will say of it) or "fold" (nothing to do).
    """

    kind: Literal["hold", "submit", "stop", "fold"]
    submission: str | None = None
    why: Literal["first", "resume", "retry", "suspend", "deadline"] | None = None
    observation: Observation | None = None


def deadline_left(spec: TrainingJobSpec, observation: Observation, now: dt.datetime) -> float | None:
    """Seconds until an active run passes spec.runtime.activeDeadlineSeconds (counted from its start
    time), when `plan_jobs_api` stops it: a clock, never paced. None without a deadline, a start time or
    an active run."""
    deadline, started = spec.runtime.active_deadline_seconds, observation.start_time
    if not deadline or started is None or observation.state not in ACTIVE:
        return None
    return max(deadline - (now - started).total_seconds(), 0.0)


def plan_jobs_api(
    observation: Observation | None,
    submission: str | None,
    phase: str | None,
    report: RunReport | None,
    spec: TrainingJobSpec,
    job: JobIdentity,
    now: dt.datetime,
) -> Action:
    """The next step for the Ray job `submission` (None: there is none) as `observation` says.

    `phase` is the TrainingJob's phase before this reconcile; `report` the run report, if read.
    """
    if observation is None or submission is None:
        if spec.suspend:
            return Action("hold")
        return Action("submit", names.submission_id(job), "first")
    if spec.suspend and observation.state in ACTIVE:
        return Action("stop", submission, "suspend", dataclasses.replace(observation, state="stopped"))
    if not spec.suspend and observation.state == "stopped" and phase == "Suspended":
        return Action("submit", names.resumed_submission(job, submission), "resume")
    deadline = spec.runtime.active_deadline_seconds
    started = observation.start_time
    if deadline and started and observation.state in ACTIVE and (now - started).total_seconds() > deadline:
        over = Observation(
            "failed",
            f"it ran longer than spec.runtime.activeDeadlineSeconds ({deadline}s) and was stopped",
            Reason.DEADLINE_EXCEEDED,
            started,
            now.replace(microsecond=0),
        )
        return Action("stop", submission, "deadline", over)
    if (
        observation.state == "failed"
        and observation.reason != Reason.DEADLINE_EXCEEDED
        and not (report and report.phase == "Failed")  # the workload's verdict is not retried
        and names.attempt(submission) < spec.runtime.backoff_limit
    ):
        return Action("submit", names.retried_submission(submission), "retry")
    return Action("fold")


def needs_report(observation: Observation) -> bool:
    """Whether the run report is worth reading: the job has started, or is past waiting."""
    return observation.state != "pending" or observation.start_time is not None
