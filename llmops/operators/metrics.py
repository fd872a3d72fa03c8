"""Prometheus metrics of the operator itself, served on /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "llmops_operator_reconciles_total",
    "Reconciles run, by kind and outcome (ready, reconciling, stalled, retry).",
    ["kind", "outcome"],
)
ERRORS = Counter(
    "llmops_operator_reconcile_errors_total",
    "Reconciles that raised, by kind and reason.",
    ["kind", "reason"],
)
LATENCY = Histogram(
    "llmops_operator_reconcile_duration_seconds",
    "Wall time of one reconcile, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

WAITING = Gauge(
    "llmops_operator_objects_waiting",
    "Objects of one of the operator's own kinds waiting for one of its places (operators.backlog), by"
    " resource (plural): at a start, or when the resource is listed again, every object beyond the"
    " places.",
    ["resource"],
)


@contextmanager
def timed(kind: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        LATENCY.labels(kind).observe(time.perf_counter() - start)
