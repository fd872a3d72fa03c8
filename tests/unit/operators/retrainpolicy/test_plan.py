"""Which run starts (pure): suspend, cooldown for event triggers, concurrencyPolicy, priorities,
history limits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from llmops.api.retrainpolicy import RetrainPolicySpec
from llmops.operators.retrainpolicy import plan
from llmops.operators.retrainpolicy.triggers import Firing

NOW = dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC)
SPEC = yaml.safe_load(Path("examples/retrainpolicy-schedule.yaml").read_text())["spec"]


def spec(**changes: object) -> RetrainPolicySpec:
    return RetrainPolicySpec.model_validate({**SPEC, **changes})


def firing(type: str, at: dt.datetime = NOW) -> Firing:
    return Firing(type, at, "1", type)


def run(name: str, minutes_ago: int, phase: str | None = "Running") -> plan.Run:
    created = NOW - dt.timedelta(minutes=minutes_ago)
    return plan.Run(name, phase, created, "drift", phase in ("Succeeded", "Failed"))


def test_the_first_trigger_in_order_wins() -> None:
    decision = plan.decide(spec(), "p", [firing("feedback"), firing("schedule"), firing("drift")], [], NOW)
    assert decision.start is not None and decision.start.type == "schedule"


def test_suspend_starts_nothing_and_says_so() -> None:
    decision = plan.decide(spec(suspend=True), "p", [firing("manual")], [], NOW)
    assert decision.start is None and "spec.suspend" in (decision.why_not or "")


def test_cooldown_holds_event_triggers_only() -> None:
    runs = [run("p-1", 10, "Succeeded")]
    held = plan.decide(spec(cooldownSeconds=3600), "p", [firing("drift")], runs, NOW)
    assert held.start is None and "cooldown (3000 s left)" in (held.why_not or "")
    scheduled = plan.decide(spec(cooldownSeconds=3600), "p", [firing("drift"), firing("schedule")], runs, NOW)
    assert scheduled.start is not None and scheduled.start.type == "schedule"
    assert plan.decide(spec(cooldownSeconds=60), "p", [firing("drift")], runs, NOW).start is not None


def test_concurrency_policies() -> None:
    runs = [run("p-1", 120)]
    forbid = plan.decide(spec(concurrencyPolicy="Forbid"), "p", [firing("schedule")], runs, NOW)
    assert forbid.start is None and "p-1 runs" in (forbid.why_not or "")
    allow = plan.decide(spec(concurrencyPolicy="Allow"), "p", [firing("schedule")], runs, NOW)
    assert allow.start is not None and allow.replace == ()
    replace = plan.decide(spec(concurrencyPolicy="Replace"), "p", [firing("schedule")], runs, NOW)
    assert replace.start is not None and replace.replace == ("p-1",)


def test_a_tick_that_already_made_its_run_is_not_blocked_by_it() -> None:
    # After a crash between create and the status write, the run of this very tick is active; the
    # same name comes out again, and create's AlreadyExists counts as success.
    name = f"p-{int(NOW.timestamp()) // 60}"
    decision = plan.decide(spec(concurrencyPolicy="Forbid"), "p", [firing("schedule")], [run(name, 0)], NOW)
    assert decision.start is not None


def test_history_limits_keep_the_newest_and_what_is_going_out() -> None:
    runs = [run(f"s{i}", 100 - i, "Succeeded") for i in range(5)] + [
        run(f"f{i}", 50 - i, "Failed") for i in range(3)
    ]
    assert plan.pruned(runs, 3, 1, set()) == ["s0", "s1", "f0", "f1"]
    assert plan.pruned(runs, 3, 1, {"s0"}) == ["s1", "f0", "f1"]
