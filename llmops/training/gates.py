"""Gates: metric thresholds whose verdicts decide whether a trained model may be registered. Pure.

The gates are the spec's explicit `evaluation.gates` plus the thresholds the suites carry:
perplexity.threshold (perplexity <= t), bias.maxGap (bias/gap <= t) and security.maxLeakage
(security/leakage <= t). A metric that was not produced fails its gate: a gate never passes by
omission.
"""

from __future__ import annotations

import math
import operator

from llmops.api.trainingjob import Evaluation, Gate, GateResult

COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def declared_gates(evaluation: Evaluation | None) -> list[Gate]:
    if evaluation is None:
        return []
    gates = list(evaluation.gates)
    if evaluation.perplexity.enabled and evaluation.perplexity.threshold is not None:
        gates.append(Gate(metric="perplexity", operator="<=", threshold=evaluation.perplexity.threshold))
    if evaluation.bias and evaluation.bias.enabled:
        gates.append(Gate(metric="bias/gap", operator="<=", threshold=evaluation.bias.max_gap))
    if evaluation.security and evaluation.security.enabled and evaluation.security.canaries:
        gates.append(
            Gate(metric="security/leakage", operator="<=", threshold=evaluation.security.max_leakage)
        )
    seen: set[tuple[str, str, float]] = set()
    unique = []
    for gate in gates:
        key = (gate.metric, gate.operator, gate.threshold)
        if key not in seen:
            seen.add(key)
            unique.append(gate)
    return unique


def verdict(gate: Gate, metrics: dict[str, float]) -> GateResult:
    value = metrics.get(gate.metric)
    if value is not None and math.isnan(value):
        value = None  # a NaN metric (a diverged model) counts as not produced
    passed = value is not None and COMPARE[gate.operator](value, gate.threshold)
    if value is not None and math.isinf(value):
        value = math.copysign(1e308, value)  # keep the report JSON-valid
    return GateResult(
        metric=gate.metric, operator=gate.operator, threshold=gate.threshold, value=value, passed=passed
    )


def check(gates: list[Gate], metrics: dict[str, float]) -> list[GateResult]:
    return [verdict(gate, metrics) for gate in gates]


def describe_failures(results: list[GateResult]) -> str:
    parts = []
    for r in results:
        if r.passed:
            continue
        measured = "was not produced" if r.value is None else f"= {r.value:.4g}"
        parts.append(f"{r.metric} {measured}, needs {r.operator} {r.threshold:g}")
    return "; ".join(parts)
