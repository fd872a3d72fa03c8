"""The champion/challenger comparison (MLflow MetricThreshold rules) and the promotion steps (pure)."""

from __future__ import annotations

from llmops.api.modeldeployment import CanaryStatus
from llmops.api.retrainpolicy import MetricThreshold, Promotion, RunRecord
from llmops.operators.retrainpolicy import promotion


def threshold(**kw: object) -> MetricThreshold:
    return MetricThreshold.model_validate(kw)


def test_lower_is_better_with_relative_change() -> None:
    t = threshold(metric="perplexity", greaterIsBetter=False, minRelativeChange=0.05)
    (won,) = promotion.compare([t], {"perplexity": 9.0}, {"perplexity": 10.0})
    assert won.passed and won.change == 1.0
    (lost,) = promotion.compare([t], {"perplexity": 9.8}, {"perplexity": 10.0})
    assert not lost.passed and "2.00%, less than 5.00%" in lost.message


def test_absolute_change_and_threshold() -> None:
    t = threshold(metric="qa/exact_match", greaterIsBetter=True, threshold=0.5, minAbsoluteChange=0.02)
    assert promotion.compare([t], {"qa/exact_match": 0.6}, {"qa/exact_match": 0.55})[0].passed
    (row,) = promotion.compare([t], {"qa/exact_match": 0.45}, {"qa/exact_match": 0.44})
    assert not row.passed and "not >= threshold 0.5" in row.message and "less than 0.02" in row.message
    assert "qa/exact_match: 0.45 vs champion 0.44" in promotion.lost_by([row])


def test_missing_values() -> None:
    t = threshold(metric="m", greaterIsBetter=True, minAbsoluteChange=0.1)
    (missing,) = promotion.compare([t], {}, {"m": 1.0})
    assert not missing.passed and "did not report" in missing.message
    (first,) = promotion.compare([t], {"m": 1.0}, None)
    assert first.passed and "not checked" in first.message


def record(verdict: str, version: str = "5") -> RunRecord:
    return RunRecord(training_job="p-1", trigger="drift", version=version, verdict=verdict)


def canary(version: str, verdict: str) -> CanaryStatus:
    return CanaryStatus(weight=10, verdict=verdict, version=version)


def test_the_steps_of_a_winner() -> None:
    p = Promotion()
    step = promotion.step(
        record("Won"), p, champion="4", challenger="4", canary=None, approved=None, busy=None
    )
    assert step.verdict == "Canary" and step.move == promotion.Move(
        "challenger", "5", "challenger", step.move.reason
    )
    waiting = promotion.step(
        record("Canary"),
        p,
        champion="4",
        challenger="5",
        canary=canary("5", "Analysing"),
        approved=None,
        busy=None,
    )
    assert waiting.verdict == "Canary" and waiting.move is None
    passed = promotion.step(
        record("Canary"),
        p,
        champion="4",
        challenger="5",
        canary=canary("5", "Promoted"),
        approved=None,
        busy=None,
    )
    assert passed.verdict == "Promoted" and passed.move.alias == "champion" and passed.move.version == "5"
    done = promotion.step(
        record("Canary"), p, champion="5", challenger="5", canary=None, approved=None, busy=None
    )
    assert done.verdict == "Promoted" and done.move is None


def test_a_failed_canary_moves_the_challenger_back() -> None:
    step = promotion.step(
        record("Canary"),
        Promotion(),
        champion="4",
        challenger="5",
        canary=canary("5", "RolledBack"),
        approved=None,
        busy=None,
    )
    assert step.verdict == "RolledBack" and step.move.alias == "challenger" and step.move.version == "4"
    moved = promotion.step(
        record("Canary"), Promotion(), champion="4", challenger="6", canary=None, approved=None, busy=None
    )
    assert moved.verdict == "RolledBack" and moved.move is None


def test_manual_approval_and_the_first_version() -> None:
    manual = Promotion(approval="Manual")
    wait = promotion.step(
        record("Won"), manual, champion="4", challenger="4", canary=None, approved="3", busy=None
    )
    assert wait.verdict == "AwaitingApproval" and wait.move is None
    go = promotion.step(
        record("AwaitingApproval"), manual, champion="4", challenger="4", canary=None, approved="5", busy=None
    )
    assert go.verdict == "Canary"
    first = promotion.step(
        record("Won"), Promotion(), champion=None, challenger=None, canary=None, approved=None, busy=None
    )
    assert first.verdict == "Promoted" and first.move.alias == "champion"


def test_a_loss_says_which_way() -> None:
    t = threshold(metric="perplexity", greaterIsBetter=False, minRelativeChange=0.05)
    (worse,) = promotion.compare([t], {"perplexity": 11.0}, {"perplexity": 10.0})
    assert "worse than the champion by 10.00%, less than 5.00%" in worse.message
    (same,) = promotion.compare([t], {"perplexity": 10.0}, {"perplexity": 10.0})
    assert "no better than the champion, less than 5.00%" in same.message
