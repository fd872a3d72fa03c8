"""The TrainingJob's decisions (plan.py), row by row from the tables in its docstring."""

from __future__ import annotations

import datetime as dt

import pytest

from llmops.api.common import ModelReference
from llmops.api.trainingjob import Evaluation
from llmops.operators.trainingjob import builders, names, plan
from llmops.operators.trainingjob.fold import Observation
from llmops.workload import RunReport

from .support import JOB, NOW, spec_of

FIRST = names.submission_id(JOB)
STARTED = NOW - dt.timedelta(minutes=10)


def jobs_api(**changes: object):
    """The full example (runtime rayJobsAPI) with a 5-minute deadline and one retry."""
    spec = spec_of("full", **changes)
    runtime = spec.runtime.model_copy(update={"active_deadline_seconds": 300, "backoff_limit": 1})
    return spec.model_copy(update={"runtime": runtime})


def decide(observation: Observation | None, submission: str | None = FIRST, **kw: object) -> plan.Action:
    spec = jobs_api(suspend=kw.pop("suspend", False))
    return plan.plan_jobs_api(
        observation,
        submission if observation is not None else None,
        kw.pop("phase", "Running"),
        kw.pop("report", None),  # type: ignore[arg-type]
        spec,
        JOB,
        NOW,
    )


# -- the Ray Jobs API table -----------------------------------------------------------------------


def test_no_job_and_suspended_holds() -> None:
    assert decide(None, suspend=True) == plan.Action("hold")


def test_no_job_submits_the_first() -> None:
    assert decide(None) == plan.Action("submit", FIRST, "first")


@pytest.mark.parametrize("state", ["pending", "running"])
def test_an_active_job_is_stopped_on_suspend_and_folded_as_stopped(state: str) -> None:
    action = decide(Observation(state, start_time=NOW), suspend=True)
    assert (action.kind, action.submission, action.why) == ("stop", FIRST, "suspend")
    assert action.observation is not None and action.observation.state == "stopped"


def test_a_stopped_job_resumes_under_a_new_id_only_after_a_suspend() -> None:
    stopped = Observation("stopped")
    older = names.submission_id(JOB.model_copy(update={"generation": 2}))
    assert decide(stopped, older, phase="Suspended") == plan.Action("submit", FIRST, "resume")
    # The id of this generation is the stopped one's already: a suffix keeps it new.
    assert decide(stopped, FIRST, phase="Suspended").submission == f"{FIRST}-resumed"
    # Stopped by someone else (the phase was not Suspended): folded, which says so.
    assert decide(stopped, phase="Running") == plan.Action("fold")
    # Still suspended: nothing to do.
    assert decide(stopped, phase="Suspended", suspend=True) == plan.Action("fold")


@pytest.mark.parametrize("state", ["pending", "running"])
def test_a_job_past_its_deadline_is_stopped_and_folded_as_failed(state: str) -> None:
    action = decide(Observation(state, start_time=STARTED))
    assert (action.kind, action.why) == ("stop", "deadline")
    over = action.observation
    assert over is not None and (over.state, over.reason) == ("failed", "DeadlineExceeded")
    assert over.start_time == STARTED and over.end_time == NOW
    assert "activeDeadlineSeconds (300s)" in over.detail
    # Within the deadline, or not started: nothing to do.
    assert decide(Observation(state, start_time=NOW - dt.timedelta(minutes=4))) == plan.Action("fold")
    assert decide(Observation(state)) == plan.Action("fold")


def test_the_deadline_is_a_clock_of_the_active_job_only() -> None:
    """`deadline_left`: the seconds until `plan_jobs_api` stops the run, which the reconcile keeps as a
    clock beside its paced poll (the Ray Jobs API has no deadline of its own)."""
    spec = jobs_api()
    for state in ("pending", "running"):
        assert (
            plan.deadline_left(spec, Observation(state, start_time=NOW - dt.timedelta(seconds=100)), NOW)
            == 200.0
        )
        assert plan.deadline_left(spec, Observation(state, start_time=STARTED), NOW) == 0.0  # past it
        assert plan.deadline_left(spec, Observation(state), NOW) is None  # not started
    assert plan.deadline_left(spec, Observation("succeeded", start_time=STARTED), NOW) is None
    no_deadline = spec.model_copy(
        update={"runtime": spec.runtime.model_copy(update={"active_deadline_seconds": None})}
    )
    assert plan.deadline_left(no_deadline, Observation("running", start_time=STARTED), NOW) is None


def test_a_crash_is_retried_up_to_the_backoff_limit() -> None:
    crashed = Observation("failed", "worker died")
    assert decide(crashed) == plan.Action("submit", f"{FIRST}-retry1", "retry")
    assert decide(crashed, f"{FIRST}-retry1") == plan.Action("fold")  # backoffLimit 1: spent


def test_the_workloads_verdict_and_the_deadline_are_not_retried() -> None:
    assert decide(Observation("failed"), report=RunReport(phase="Failed")) == plan.Action("fold")
    assert decide(Observation("failed", reason="DeadlineExceeded")) == plan.Action("fold")
    # A report still Running is no verdict: the crash is retried.
    assert decide(Observation("failed"), report=RunReport(phase="Running")).why == "retry"


@pytest.mark.parametrize("state", ["pending", "running", "succeeded"])
def test_anything_else_is_folded(state: str) -> None:
    assert decide(Observation(state, start_time=NOW)) == plan.Action("fold")


def test_the_report_is_read_once_the_job_started_or_is_past_waiting() -> None:
    assert not plan.needs_report(Observation("pending"))
    assert plan.needs_report(Observation("pending", start_time=NOW))
    assert plan.needs_report(Observation("stopped"))


# -- which run ------------------------------------------------------------------------------------


def test_which_run_table() -> None:
    spec = spec_of("lora")
    earlier = builders.training_run(builders.pin_base(spec, "7"), JOB, "0.1.0")
    other = spec_of("lora", method={"type": "lora", "hyperparameters": {"learningRate": 0.1}})
    assert plan.choose_run(spec, None, started=False) == plan.RunChoice(None)
    assert plan.choose_run(other, earlier, started=True) == plan.RunChoice(earlier, changed=True)
    assert plan.choose_run(spec, earlier, started=True) == plan.RunChoice(earlier)
    assert plan.choose_run(spec, earlier, started=False) == plan.RunChoice(earlier)
    assert plan.choose_run(other, earlier, started=False) == plan.RunChoice(None)


def test_a_new_run_keeps_the_base_an_earlier_run_pinned() -> None:
    spec = spec_of("lora")
    earlier = builders.training_run(builders.pin_base(spec, "7"), JOB, "0.1.0")
    assert plan.pinned_base(spec, earlier) == "7"
    assert plan.pinned_base(spec, None) is None
    base = spec.model.base.model_copy(update={"name": "another-base"})
    renamed = spec.model_copy(update={"model": spec.model.model_copy(update={"base": base})})
    assert plan.pinned_base(renamed, earlier) is None  # another base: resolved afresh
    run = plan.new_run(spec, JOB, "7", "0.1.0")
    assert run.spec.model.base.version == "7" and run.spec.model.base.alias is None
    assert run == earlier


def with_baseline(spec, **ref):
    evaluation = (spec.evaluation or Evaluation()).model_copy(update={"baseline": ModelReference(**ref)})
    return spec.model_copy(update={"evaluation": evaluation})


def test_a_new_run_pins_the_baseline_and_keeps_the_pin() -> None:
    spec = with_baseline(spec_of("lora"), name="support-bot", alias="champion")
    run = plan.new_run(spec, JOB, "7", "0.1.0", baseline_version="12")
    baseline = run.spec.evaluation.baseline
    assert (baseline.name, baseline.version, baseline.alias) == ("support-bot", "12", None)
    assert plan.pinned_baseline(spec, run) == "12"  # the alias moved on: the run keeps its version
    assert plan.pinned_baseline(spec, None) is None
    assert plan.pinned_baseline(with_baseline(spec_of("lora"), name="other", alias="champion"), run) is None
    assert plan.pinned_baseline(spec_of("lora"), run) is None  # no baseline wanted any more
    # A pinned baseline trains the same thing as the alias it came from; another model does not.
    assert builders.same_training(run.spec, spec)
    assert not builders.same_training(run.spec, with_baseline(spec_of("lora"), name="other", version="1"))
    assert not builders.same_training(run.spec, spec_of("lora"))
    with pytest.raises(AssertionError, match=r"resolve spec\.evaluation\.baseline first"):
        plan.new_run(spec, JOB, "7", "0.1.0")


def test_a_new_run_pins_the_teacher_and_keeps_the_pin() -> None:
    distillation = {"teacher": {"name": "teacher", "alias": "production"}, "temperature": 3.0}
    spec = spec_of("full", method={"type": "distill", "distillation": distillation})
    run = plan.new_run(spec, JOB, "7", "0.1.0", teacher_version="4")
    teacher = run.spec.method.distillation.teacher
    assert (teacher.name, teacher.version, teacher.alias) == ("teacher", "4", None)
    assert run.spec.method.distillation.temperature == 3.0
    assert plan.pinned_teacher(spec, run) == "4"  # the alias moved on: the run keeps its version
    assert plan.pinned_teacher(spec, None) is None
    other = spec_of(
        "full", method={"type": "distill", "distillation": {"teacher": {"name": "x", "version": "1"}}}
    )
    assert plan.pinned_teacher(other, run) is None
    assert builders.same_training(run.spec, spec)
    assert not builders.same_training(run.spec, other)
    with pytest.raises(AssertionError, match=r"resolve spec\.method\.distillation\.teacher first"):
        plan.new_run(spec, JOB, "7", "0.1.0")
