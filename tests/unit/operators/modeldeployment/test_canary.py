"""The canary's analysis, step machine and traffic split (llmops/operators/modeldeployment/canary.py)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.api.common import ModelReference
from llmops.api.modeldeployment import (
    Canary,
    CanaryStatus,
)
from llmops.dev.tools import binary
from llmops.operators.modeldeployment import canary
from llmops.operators.modeldeployment.autoscaling import scaler_queries
from llmops.operators.modeldeployment.canary import Analysis, Sample, advance, analyse
from llmops.operators.modeldeployment.plan import ServedVersion, ServingSettings
from tests.unit.operators.modeldeployment.cases import (
    case,
)

PROMTOOL = binary("promtool")  # built from the Go module proxy (hack/tools/prometheus)


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


CANARY = Canary.model_validate(
    {
        "model": {"name": "bot", "version": "4"},
        "weight": 10,
        "steps": [25, 50, 100],
        "analysis": {
            "intervalSeconds": 60,
            "maxErrorRate": 0.02,
            "maxLatencyRatio": 1.2,
            "maxP95LatencyMs": 3000,
        },
    }
)


GOOD = Sample(requests=1000, errors=3, p95_latency_ms=800)


STABLE = Sample(requests=9000, errors=10, p95_latency_ms=750)


def test_analysis() -> None:
    rules = CANARY.analysis
    assert analyse(rules, GOOD, STABLE).verdict == "pass"
    assert analyse(rules, None, STABLE).verdict == "inconclusive"
    assert analyse(rules, Sample(0, 0, None), STABLE).verdict == "inconclusive"
    bad = analyse(rules, Sample(1000, 50, 800), STABLE)
    assert bad.verdict == "fail" and "error rate 0.05 > 0.02" in bad.message and bad.error_rate == 0.05
    slow = analyse(rules, Sample(1000, 0, 1200), STABLE)
    assert slow.verdict == "fail" and "ratio" in slow.message and slow.latency_ratio == pytest.approx(1.6)
    assert "3500 ms > 3000 ms" in analyse(rules, Sample(1000, 0, 3500), Sample(1, 0, 3400)).message
    assert analyse(rules, Sample(10, 0, 900), None).verdict == "pass"  # no baseline: ratio not judged


def run_machine(
    results: list[Analysis], ready: bool = True, rules: Canary | None = None
) -> list[canary.Step]:
    """Drive the machine through one reconcile per clock tick, as the operator would."""
    state: CanaryStatus | None = None
    steps = []
    pending = list(results)
    now = T0
    for _ in range(4 * len(results) + 4):
        step = advance(
            rules or CANARY, state, model="bot", version="4", baseline="3", ready=ready, now=now,
            analysis=lambda window: pending.pop(0),
        )  # fmt: skip
        steps.append(step)
        state = step.status
        if step.status.verdict != "Analysing" or not pending:
            break
        now = now + dt.timedelta(seconds=step.requeue_after or 60)
    return steps


def test_canary_steps_up_and_is_promoted() -> None:
    passed = Analysis("pass", "fine", 0.001, 800, 1.05)
    steps = run_machine([passed] * 4)
    assert [s.weight for s in steps] == [10, 25, 50, 100, 100]
    assert [s.event.reason for s in steps if s.event] == ["CanaryProgressed"] * 3 + ["Promoted"]
    last = steps[-1]
    assert last.promoted and last.status.verdict == "Promoted" and last.status.weight == 100
    assert "promoted" in last.event.message and "version 3 is removed" in last.event.message  # type: ignore[union-attr]
    again = advance(
        CANARY, last.status, model="bot", version="4", baseline="3", ready=True, now=T0, analysis=None
    )  # type: ignore[arg-type]
    assert again.promoted and again.event is None  # stays promoted, analyses nothing


def test_a_promotion_says_where_to_record_it() -> None:
    passed = [Analysis("pass", "fine", 0.001, 800, 1.05)] * 4
    pinned = run_machine(passed)[-1].event
    assert pinned and "Set spec.model to it and remove rollout.canary" in pinned.message
    # A canary that follows an alias: the spec stays as it is (kept in Git); the stable's alias moves.
    aliased = CANARY.model_copy(update={"model": ModelReference(name="bot", alias="challenger")})
    moved = run_machine(passed, rules=aliased)[-1].event
    assert moved and "Move the alias spec.model follows to version 4" in moved.message
    assert "Set spec.model" not in moved.message


def test_canary_rolls_back_and_says_why() -> None:
    failing = Analysis("fail", "error rate 0.12 > 0.02", 0.12, 900, 1.1)
    steps = run_machine([Analysis("pass", "ok", 0, 1, 1), failing])
    last = steps[-1]
    assert last.status.verdict == "RolledBack" and last.weight == 0 and not last.serve_canary
    assert last.event and last.event.warning and last.event.reason == "RolledBack"
    assert "error rate 0.12 > 0.02" in last.event.message and "at 25%" in last.event.message
    assert last.status.error_rate == 0.12


def test_canary_without_auto_rollback_halts() -> None:
    rules = CANARY.model_copy(update={"auto_rollback": False})
    state = advance(rules, None, model="bot", version="4", baseline="3", ready=True, now=T0, analysis=None)  # type: ignore[arg-type]
    later = T0 + dt.timedelta(seconds=61)
    step = advance(
        rules, state.status, model="bot", version="4", baseline="3", ready=True, now=later,
        analysis=lambda w: Analysis("fail", "p95 latency 4000 ms > 3000 ms"),
    )  # fmt: skip
    assert step.status.verdict == "Halted" and step.weight == 10 and step.serve_canary
    assert step.event and step.event.reason == "AnalysisFailed"


def test_canary_clock_waits_for_readiness_and_traffic() -> None:
    first = advance(CANARY, None, model="bot", version="4", baseline="3", ready=False, now=T0, analysis=None)  # type: ignore[arg-type]
    assert first.weight == 0 and first.status.step_start_time is None and first.serve_canary
    started = advance(
        CANARY, first.status, model="bot", version="4", baseline="3", ready=True, now=T0, analysis=None
    )  # type: ignore[arg-type]
    assert started.weight == 10 and started.status.step_start_time == T0 and started.requeue_after == 60
    early = T0 + dt.timedelta(seconds=20)
    waiting = advance(
        CANARY, started.status, model="bot", version="4", baseline="3", ready=True, now=early, analysis=None
    )  # type: ignore[arg-type]
    assert waiting.requeue_after == 40 and waiting.status == started.status
    late = T0 + dt.timedelta(seconds=60)
    quiet = advance(
        CANARY, started.status, model="bot", version="4", baseline="3", ready=True, now=late,
        analysis=lambda w: Analysis("inconclusive", "no requests reached the canary in the window"),
    )  # fmt: skip
    assert quiet.status.step == 0 and quiet.status.step_start_time == late and quiet.event is None
    # A new canary version (or a new baseline) starts over.
    other = advance(
        CANARY, quiet.status, model="bot", version="5", baseline="3", ready=True, now=late, analysis=None
    )  # type: ignore[arg-type]
    assert other.status.version == "5" and other.status.step == 0 and other.status.last_analysis_time is None


@given(st.lists(st.sampled_from(["pass", "fail", "inconclusive"]), min_size=1, max_size=12), st.booleans())
@settings(max_examples=200, deadline=None)
def test_canary_weights_only_grow_until_a_verdict(verdicts: list[str], auto_rollback: bool) -> None:
    rules = CANARY.model_copy(update={"auto_rollback": auto_rollback})
    pending, used = list(verdicts), []

    def analysis(window: int) -> Analysis:
        used.append(pending.pop(0))
        return Analysis(used[-1], used[-1])  # type: ignore[arg-type]

    state, now, weights = None, T0, []
    while pending and (state is None or state.verdict == "Analysing"):
        step = advance(
            rules, state, model="bot", version="4", baseline="3", ready=True, now=now, analysis=analysis
        )
        state, now = step.status, now + dt.timedelta(seconds=step.requeue_after or 60)
        weights.append(step.weight)
    assert state is not None and all(w in (0, 10, 25, 50, 100) for w in weights)
    analysing = weights if state.verdict == "Analysing" else weights[:-1]
    assert analysing == sorted(analysing)
    assert state.step == min(used.count("pass"), 3)
    if state.verdict == "Promoted":
        assert weights[-1] == 100 and used.count("pass") == 4 and "fail" not in used
    elif state.verdict == "RolledBack":
        assert auto_rollback and used[-1] == "fail" and weights[-1] == 0
    elif state.verdict == "Halted":
        assert not auto_rollback and used[-1] == "fail" and weights[-1] == weights[-2]
    else:
        assert "fail" not in used and used.count("pass") < 4


def test_prometheus_source_queries_parse() -> None:
    """Every PromQL expression we emit (analysis, KEDA triggers) parses, checked by promtool."""
    queries = list(canary.PrometheusSource("http://x").queries("demo", "bot", "4", 300).values())
    parent, _spec, plan = case("canary")
    queries += list(scaler_queries(parent, plan.versions[0]).values())
    rules = {
        "groups": [{"name": "q", "rules": [{"record": f"q{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmops-queries-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(rules))
    try:
        result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    finally:
        path.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


def test_traffic_split() -> None:
    stable = ServedVersion("bot", "3", "stable", 0, "md-3-vllm")
    cand = ServedVersion("bot", "4", "canary", 0, "md-4-vllm")
    old = ServedVersion("bot", "2", "previous", 0, "md-2-vllm")

    def split(step, retiring=None, ready=("md-3-vllm", "md-4-vllm")):
        return [
            (v.version, v.role, v.weight)
            for v in canary.traffic(
                stable, cand if step else None, step, retiring, ready=lambda n: n in ready
            )
        ]

    def at(weight: int, **kw) -> canary.Step:
        status = CanaryStatus(weight=weight, verdict="Analysing")
        return canary.Step(
            status, weight, serve_canary=kw.get("serve", True), promoted=kw.get("promoted", False)
        )

    assert split(None) == [("3", "stable", 100)]
    assert split(at(25)) == [("3", "stable", 75), ("4", "canary", 25)]
    assert split(at(100, promoted=True)) == [("4", "stable", 100)]
    assert split(at(0, serve=False)) == [("3", "stable", 100)]
    # A replaced version keeps the stable share until the new stable version has a ready replica.
    assert split(None, old, ready=()) == [("3", "stable", 0), ("2", "previous", 100)]
    assert split(at(10), old, ready=("md-4-vllm",)) == [
        ("3", "stable", 0),
        ("2", "previous", 90),
        ("4", "canary", 10),
    ]
    assert split(None, old) == [("3", "stable", 100)]


def test_traffic_never_drops_below_the_stable_replicas() -> None:
    """minReplicas 3: a canary takes all the traffic only with 3 ready replicas; a promoted canary
    takes over from the old stable version only once it has 3, keeping its canary weight meanwhile."""
    stable = ServedVersion("bot", "3", "stable", 0, "md-3-vllm")
    cand = ServedVersion("bot", "4", "canary", 0, "md-4-vllm")
    old = ServedVersion("bot", "3", "previous", 0, "md-3-vllm")

    def split(step, retiring=None, ready=None, carry=0):
        counts = {"md-3-vllm": 3, **(ready or {})}
        return [
            (v.version, v.role, v.weight)
            for v in canary.traffic(
                stable, cand, step, retiring, ready=lambda n: counts.get(n, 0), need=3, carry=carry
            )
        ]

    def at(weight: int, promoted: bool = False) -> canary.Step:
        status = CanaryStatus(weight=weight, verdict="Promoted" if promoted else "Analysing")
        return canary.Step(status, weight, serve_canary=True, promoted=promoted)

    assert canary.canary_replicas(50, 3) == 1 and canary.canary_replicas(100, 3) == 3
    assert split(at(50), ready={"md-4-vllm": 1}) == [("3", "stable", 50), ("4", "canary", 50)]
    assert split(at(100), ready={"md-4-vllm": 1}) == [("3", "stable", 100), ("4", "canary", 0)]
    assert split(at(100), ready={"md-4-vllm": 3}) == [("3", "stable", 0), ("4", "canary", 100)]
    promoted = at(100, promoted=True)
    assert split(promoted, old, {"md-4-vllm": 1}, carry=50) == [("4", "stable", 50), ("3", "previous", 50)]
    assert split(promoted, old, {"md-4-vllm": 0}, carry=50) == [("4", "stable", 0), ("3", "previous", 100)]
    assert split(promoted, old, {"md-4-vllm": 3}, carry=50) == [("4", "stable", 100)]


def test_analysis_window_is_at_least_four_scrapes_and_inconclusive_ones_are_counted() -> None:
    assert ServingSettings(scrape_interval="15s").scrape_seconds == 15
    assert ServingSettings(scrape_interval="1m").scrape_seconds == 60
    # Prometheus durations as prometheus-operator's CRDs take them: whole units, largest first.
    for interval, seconds in (
        ("1m30s", 90),
        ("500ms", 0.5),
        ("1d", 86400),
        ("1h0m5s", 3605),
        ("2w", 1209600),
    ):
        assert ServingSettings(scrape_interval=interval).scrape_seconds == seconds
    for wrong in ("1.5m", "0.5s", "15", "0s", "0", "", "30s1m", "1 m", "15S", "\u0661\u0665s"):
        with pytest.raises(ValueError, match="scrape interval"):
            _ = ServingSettings(scrape_interval=wrong).scrape_seconds
    assert canary.analysis_window(15) == 60 and canary.analysis_window(0.5) == 2
    short = CANARY.model_copy(
        update={"analysis": CANARY.analysis.model_copy(update={"interval_seconds": 10})}
    )
    windows: list[int] = []

    def nothing(window: int) -> Analysis:
        windows.append(window)
        return Analysis("inconclusive", "no requests reached the canary in the window")

    state = None
    now = T0
    for _ in range(8):
        step = advance(
            short, state, model="bot", version="4", baseline="3", ready=True, now=now, analysis=nothing,
            min_window=60,
        )  # fmt: skip
        assert step.requeue_after is None or step.requeue_after >= 60 or step.status.step_start_time
        state = step.status
        now += dt.timedelta(seconds=60)
    assert windows and set(windows) == {60} and state.window_seconds == 60
    assert state.inconclusive_analyses == len(windows) >= 3 and state.step == 0


def test_a_canary_status_belongs_to_one_canary_and_one_baseline() -> None:
    stable = ServedVersion("bot", "3", "stable", 0, "md-3-vllm")
    cand = ServedVersion("bot", "4", "canary", 0, "md-4-vllm")
    state = CanaryStatus(weight=10, verdict="Analysing", model="bot", version="4", baseline_version="3")
    assert canary.same_canary(state, cand, stable)
    assert not canary.same_canary(state, ServedVersion("bot", "5", "canary", 0, "md-5-vllm"), stable)
    assert not canary.same_canary(state, cand, ServedVersion("bot", "2", "stable", 0, "md-2-vllm"))
    assert not canary.same_canary(None, cand, stable) and not canary.same_canary(state, None, stable)


def test_a_suspended_canary_is_frozen_where_it_was() -> None:
    """spec.suspend: `frozen` keeps the machine's state as it is, whatever the clock says: no analysis
    (it would find no traffic), no Event, no requeue; a new canary waits at step 0."""
    state = CanaryStatus(
        step=1, weight=25, verdict="Analysing", model="bot", version="4", baseline_version="3",
        step_start_time=T0, last_analysis_time=T0, message="120 requests, error rate 0",
    )  # fmt: skip
    held = canary.frozen(CANARY, state, model="bot", version="4", baseline="3")
    assert held.status == state and held.weight == 25 and held.event is None and held.requeue_after is None
    assert held.serve_canary and not held.promoted
    fresh = canary.frozen(CANARY, state, model="bot", version="5", baseline="3")
    assert (fresh.status.step, fresh.status.weight, fresh.status.version) == (0, 10, "5")
    assert fresh.status.step_start_time is None
    for verdict, weight, serve, promoted in (("Promoted", 100, True, True), ("RolledBack", 0, False, False)):
        done = state.model_copy(update={"verdict": verdict})
        held = canary.frozen(CANARY, done, model="bot", version="4", baseline="3")
        assert (held.weight, held.serve_canary, held.promoted) == (weight, serve, promoted), verdict
    # Resumed, the same state goes on: the canary is not ready yet, so its step's clock restarts.
    resumed = advance(
        CANARY, state, model="bot", version="4", baseline="3", ready=False, now=T0, analysis=lambda w: None
    )  # type: ignore[arg-type,return-value]
    assert (resumed.status.step, resumed.status.weight, resumed.status.step_start_time) == (1, 25, None)
