"""When a RetrainPolicy is reconciled again (pure fold): its triggers' evaluation is a poll, which the
runtime paces when many policies poll at once (runtime.poll_after); its next schedule time is a clock,
which that pacing never passes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from llmops.api.retrainpolicy import RetrainPolicySpec
from llmops.operators.retrainpolicy import fold

NOW = dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC)
SPEC = RetrainPolicySpec.model_validate(
    yaml.safe_load(Path("examples/retrainpolicy-schedule.yaml").read_text())["spec"]
)


def found(next_schedule: dt.datetime | None) -> fold.Found:
    return fold.Found(
        now=NOW,
        triggers=[],
        runs=[],
        active=[],
        last_schedule_time=None,
        last_trigger=None,
        champion="3",
        last_promoted=None,
        manual_request=None,
        next_schedule=next_schedule,
    )


def test_the_evaluation_is_a_poll_and_the_schedule_a_clock_it_is_never_paced_past() -> None:
    watching = fold.fold(SPEC, found(None), evaluate_every=60.0)
    assert (watching.phase, watching.requeue_after, watching.poll, watching.clock) == (
        "Watching",
        60.0,
        True,
        None,
    )
    # The next run in 17 h: the poll first, the clock kept beside it (the runtime's pacing stops there).
    later = fold.fold(SPEC, found(NOW + dt.timedelta(hours=17)), evaluate_every=60.0)
    assert (later.requeue_after, later.poll, later.clock) == (60.0, True, 17 * 3600.0)
    # The next run in 20 s: the clock, not paced.
    soon = fold.fold(SPEC, found(NOW + dt.timedelta(seconds=20)), evaluate_every=60.0)
    assert (soon.requeue_after, soon.poll, soon.retry, soon.clock) == (20.0, False, False, None)
    # A schedule time already past is looked at again in a second, as a clock.
    past = fold.fold(SPEC, found(NOW - dt.timedelta(seconds=5)), evaluate_every=60.0)
    assert (past.requeue_after, past.poll) == (1.0, False)
