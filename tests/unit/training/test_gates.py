"""Gates: declared thresholds, verdicts, missing metrics."""

from __future__ import annotations

import math

from llmops.api.trainingjob import Evaluation, Gate
from llmops.training import gates


def test_suites_carry_their_thresholds_as_gates():
    ev = Evaluation.model_validate(
        {
            "perplexity": {"threshold": 50},
            "bias": {"maxGap": 0.2},
            "security": {"canaries": 4, "maxLeakage": 0},
            "gates": [{"metric": "qa/rouge_l", "operator": ">=", "threshold": 0.3}],
        }
    )
    declared = [(g.metric, g.operator, g.threshold) for g in gates.declared_gates(ev)]
    assert declared == [
        ("qa/rouge_l", ">=", 0.3),
        ("perplexity", "<=", 50),
        ("bias/gap", "<=", 0.2),
        ("security/leakage", "<=", 0.0),
    ]
    assert gates.declared_gates(None) == []
    assert gates.declared_gates(Evaluation.model_validate({"security": {"canaries": 0}})) == []


def test_verdicts_and_missing_metrics():
    results = gates.check(
        [
            Gate(metric="a", operator=">", threshold=0.5),
            Gate(metric="b", operator="<", threshold=1),
            Gate(metric="missing", operator=">=", threshold=0),
            Gate(metric="nan", operator="<", threshold=10),
        ],
        {"a": 0.7, "b": 1.0, "nan": math.nan},
    )
    assert [r.passed for r in results] == [True, False, False, False]
    assert results[2].value is None and results[3].value is None
    message = gates.describe_failures(results)
    assert "b = 1, needs < 1" in message and "missing was not produced" in message and "a " not in message


def test_boundaries():
    for op, value, passed in [("<=", 1.0, True), ("<", 1.0, False), (">=", 1.0, True), (">", 1.0, False)]:
        assert gates.verdict(Gate(metric="m", operator=op, threshold=1.0), {"m": value}).passed is passed
