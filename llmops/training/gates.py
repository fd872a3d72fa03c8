"""Gates: metric thresholds whose verdicts decide whether a trained model may be registered. Pure.

The gates are the spec's explicit `evaluation.gates` plus the thresholds the suites carry:
perplexity.threshold (perplexity <= t), bias.maxGap (bias/gap <= t) and security.maxLeakage
(security/leakage <= t). A metric that was not produced fails its gate: a gate never passes by
omission.

A gate with `compare: ratio` or `compare: difference` measures the metric against the baseline scored
in the same run (spec.evaluation.baseline, or the parent of a quantize run and the teacher of a
distill run): value / baseline or value - baseline is compared with the threshold. Without a baseline
value (not scored, NaN, or a ratio over 0) the gate fails, as a missing metric does.
"""

from __future__ import annotations

import math
import operator

from llmops.api.trainingjob import Evaluation, Gate, GateResult

COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def declared_gates(evaluation: Evaluation | None, *, canaries: int) -> list[Gate]:
    """The gates of `evaluation` plus those its suites imply: perplexity's threshold, bias's maxGap,
    and security's maxLeakage when `canaries` (TrainingJobSpec.planted_canaries) were planted."""
    if evaluation is None:
        return []
    gates = list(evaluation.gates)
    if evaluation.perplexity.enabled and evaluation.perplexity.threshold is not None:
        gates.append(Gate(metric="perplexity", operator="<=", threshold=evaluation.perplexity.threshold))
    if evaluation.bias and evaluation.bias.enabled:
        gates.append(Gate(metric="bias/gap", operator="<=", threshold=evaluation.bias.max_gap))
    if evaluation.security and evaluation.security.enabled and canaries:
        gates.append(
            Gate(metric="security/leakage", operator="<=", threshold=evaluation.security.max_leakage)
        )
    seen: set[tuple[str, str, str, float]] = set()
    unique = []
    for gate in gates:
        key = (gate.metric, gate.compare or "value", gate.operator, gate.threshold)
        if key not in seen:
            seen.add(key)
            unique.append(gate)
    return unique


def _finite(value: float | None) -> float | None:
    """None for a missing or NaN value (a diverged model counts as not produced); infinities clipped
    to +-1e308 so the report stays JSON-valid."""
    if value is None or math.isnan(value):
        return None
    return math.copysign(1e308, value) if math.isinf(value) else value


def verdict(gate: Gate, metrics: dict[str, float], baseline: dict[str, float] | None = None) -> GateResult:
    """The verdict of `gate` on `metrics`; `baseline` holds the baseline's metrics from the same run."""
    value = _finite(metrics.get(gate.metric))
    if gate.compare in (None, "value"):
        passed = value is not None and COMPARE[gate.operator](value, gate.threshold)
        return GateResult(
            metric=gate.metric, operator=gate.operator, threshold=gate.threshold, value=value, passed=passed
        )
    base = _finite((baseline or {}).get(gate.metric))
    compared = None
    if value is not None and base is not None:
        if gate.compare == "difference":
            compared = value - base
        elif base != 0:
            compared = value / base
    compared = _finite(compared)
    passed = compared is not None and COMPARE[gate.operator](compared, gate.threshold)
    return GateResult(
        metric=gate.metric,
        compare=gate.compare,
        operator=gate.operator,
        threshold=gate.threshold,
        value=value,
        baseline_value=base,
        compared=compared,
        passed=passed,
    )


def check(
    gates: list[Gate], metrics: dict[str, float], baseline: dict[str, float] | None = None
) -> list[GateResult]:
    """Every gate's verdict; `baseline`: the baseline's metrics for gates with compare ratio/difference."""
    return [verdict(gate, metrics, baseline) for gate in gates]


def describe_failures(results: list[GateResult]) -> str:
    return "; ".join(r.describe() for r in results if not r.passed)
