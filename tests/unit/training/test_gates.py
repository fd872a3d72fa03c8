"""Gates: declared thresholds, verdicts, missing metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from llmops.api.trainingjob import Evaluation, Gate, TrainingJobSpec
from llmops.training import gates

ROOT = Path(__file__).resolve().parents[3]


def load_example(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def test_suites_carry_their_thresholds_as_gates():
    ev = Evaluation.model_validate(
        {
            "perplexity": {"threshold": 50},
            "bias": {"maxGap": 0.2},
            "security": {"canaries": 4, "maxLeakage": 0},
            "gates": [{"metric": "qa/rouge_l", "operator": ">=", "threshold": 0.3}],
        }
    )
    declared = [(g.metric, g.operator, g.threshold) for g in gates.declared_gates(ev, canaries=4)]
    assert declared == [
        ("qa/rouge_l", ">=", 0.3),
        ("perplexity", "<=", 50),
        ("bias/gap", "<=", 0.2),
        ("security/leakage", "<=", 0.0),
    ]
    assert gates.declared_gates(None, canaries=0) == []
    assert gates.declared_gates(Evaluation.model_validate({"security": {"canaries": 0}}), canaries=0) == []


def test_a_quantize_run_plants_no_canary_and_implies_no_leakage_gate():
    """A quantize run trains nothing: a canary in its calibration data could not be memorised, so its
    leakage gate would pass on data that is not there. The spec says how many are planted, and the
    implied gate follows it; the probes still run."""
    quantize = load_example("examples/trainingjob-quantize.yaml")
    quantize["spec"]["evaluation"]["security"] = {"probes": ["promptInjection"]}  # canaries default 8
    spec = TrainingJobSpec.model_validate(quantize["spec"])
    assert spec.planted_canaries() == 0
    metrics = [g.metric for g in gates.declared_gates(spec.evaluation, canaries=spec.planted_canaries())]
    assert "security/leakage" not in metrics
    distill = load_example("examples/trainingjob-distill.yaml")
    distill["spec"]["evaluation"]["security"] = {"canaries": 4}
    spec = TrainingJobSpec.model_validate(distill["spec"])
    assert spec.planted_canaries() == 4
    metrics = [g.metric for g in gates.declared_gates(spec.evaluation, canaries=spec.planted_canaries())]
    assert "security/leakage" in metrics


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


def test_relative_gates_compare_against_the_baseline_of_the_same_run():
    ratio = Gate(metric="perplexity", compare="ratio", operator="<=", threshold=1.03)
    drop = Gate(metric="qa/exact_match", compare="difference", operator=">=", threshold=-0.01)
    baseline = {"perplexity": 12.0, "qa/exact_match": 0.50}
    ok = gates.check([ratio, drop], {"perplexity": 12.3, "qa/exact_match": 0.495}, baseline)
    assert [r.passed for r in ok] == [True, True]
    assert ok[0].compared == pytest.approx(1.025) and ok[0].baseline_value == 12.0
    assert ok[1].compared == pytest.approx(-0.005)
    bad = gates.check([ratio, drop], {"perplexity": 12.5, "qa/exact_match": 0.48}, baseline)
    assert [r.passed for r in bad] == [False, False]
    text = gates.describe_failures(bad)
    assert "perplexity = 12.5 against the baseline's 12, +0.5 (+4.2%); ratio 1.042, needs <= 1.03" in text
    assert "qa/exact_match = 0.48 against the baseline's 0.5, -0.02 (-4.0%); difference -0.02" in text


def test_a_relative_gate_without_a_baseline_value_fails():
    ratio = Gate(metric="perplexity", compare="ratio", operator="<=", threshold=1.03)
    for baseline in (None, {}, {"perplexity": math.nan}, {"perplexity": 0.0}):
        (result,) = gates.check([ratio], {"perplexity": 5.0}, baseline)
        assert not result.passed and result.compared is None
    (missing,) = gates.check([ratio], {}, {"perplexity": 5.0})
    assert not missing.passed and missing.describe() == "perplexity was not produced"
    assert "undefined" in gates.check([ratio], {"perplexity": 5.0}, {"perplexity": 0.0})[0].describe()


def test_a_value_gate_keeps_its_verdict_bytes():
    """A plain gate's verdict has no relative fields: run reports written before them read the same."""
    (result,) = gates.check([Gate(metric="a", operator=">", threshold=0.5)], {"a": 0.7}, {"a": 0.1})
    assert result.model_dump(by_alias=True, exclude_none=True) == {
        "metric": "a",
        "operator": ">",
        "threshold": 0.5,
        "value": 0.7,
        "passed": True,
    }
    same = gates.declared_gates(
        Evaluation.model_validate(
            {
                "gates": [
                    {"metric": "perplexity", "operator": "<=", "threshold": 1.03},
                    {"metric": "perplexity", "compare": "ratio", "operator": "<=", "threshold": 1.03},
                    {"metric": "perplexity", "compare": "value", "operator": "<=", "threshold": 1.03},
                ]
            }
        ),
        canaries=0,
    )
    assert [g.compare for g in same] == [None, "ratio"]
