"""The gateway's Prometheus metrics, served at `GET /metrics` (one registry per `Gateway`).

| Series | Labels | What |
|---|---|---|
| `llmops_gateway_requests_total` | version, code | requests answered (`NO_VERSION` before one was chosen) |
| `llmops_gateway_errors_total` | version, reason | failed requests, by the reason the logs give too |
| `llmops_gateway_request_duration_seconds` | version | request to last byte (`LATENCY_BUCKETS`) |
| `llmops_gateway_time_to_first_token_seconds` | version | request to first streamed token (`TTFT_BUCKETS`) |
| `llmops_gateway_queue_wait_seconds` | | time waiting for a replica |
| `llmops_gateway_{prompt,completion}_tokens_total` | version | tokens, from the answers' usage |
| `llmops_gateway_pending_requests` | | queued or held for a replica |
| `llmops_gateway_inflight_requests` | version | requests at the replicas |
| `llmops_gateway_suspended` | | 1 while the config's `suspension` is set (`spec.suspend`) |
| `llmops_gateway_ready_replicas`, `llmops_gateway_weight` | version | replicas passing checks; weight |
| `llmops_gateway_anomaly_score`, `llmops_gateway_anomaly` | signal | serving.anomaly's verdicts |
| `llmops_gateway_samples_{written,dropped}_total` | kind | payload, prompt and feedback records |
| `llmops_gateway_feedback_total` | version, name, sentiment | feedback accepted (`feedback` below) |

The alerts and the dashboard (llmops/operators/modeldeployment/monitoring.py) query these names.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: they double the series count for nothing here

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
NO_VERSION = "none"  # the version label of requests refused before one was chosen
MAX_FEEDBACK_NAMES = 32  # distinct feedback names with their own label value; later ones count as "other"
SENTIMENTS = ("positive", "negative", "neutral")
DEFAULT_FEEDBACK_NAME = "thumbs"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "llmops_gateway_requests",
            "Requests answered, by version and HTTP status code.",
            ["version", "code"],
            registry=r,
        )
        self.errors = Counter(
            "llmops_gateway_errors",
            "Failed requests, by version and reason.",
            ["version", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "llmops_gateway_request_duration_seconds",
            "Time from request to the end of the response, by version.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llmops_gateway_time_to_first_token_seconds",
            "Time from request to the first streamed token, by version.",
            ["version"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "llmops_gateway_queue_wait_seconds",
            "Time spent waiting for a replica.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "llmops_gateway_prompt_tokens", "Prompt tokens, by version.", ["version"], registry=r
        )
        self.completion_tokens = Counter(
            "llmops_gateway_completion_tokens", "Completion tokens, by version.", ["version"], registry=r
        )
        self.pending = Gauge(
            "llmops_gateway_pending_requests",
            "Requests waiting for a replica (queued while busy, or held while scaled to zero).",
            registry=r,
        )
        self.inflight = Gauge(
            "llmops_gateway_inflight_requests",
            "Requests at the replicas, by version.",
            ["version"],
            registry=r,
        )
        self.suspended = Gauge(
            "llmops_gateway_suspended",
            "1 while the ModelDeployment is suspended: every request is answered 503 model_suspended.",
            registry=r,
        )
        self.ready = Gauge(
            "llmops_gateway_ready_replicas",
            "Replicas passing health checks, by version.",
            ["version"],
            registry=r,
        )
        self.weight = Gauge(
            "llmops_gateway_weight", "Configured traffic weight, by version.", ["version"], registry=r
        )
        self.anomaly_score = Gauge(
            "llmops_gateway_anomaly_score",
            "Robust z-score of the last window, by signal.",
            ["signal"],
            registry=r,
        )
        self.anomaly = Gauge(
            "llmops_gateway_anomaly", "1 while the signal's last window is anomalous.", ["signal"], registry=r
        )
        self.samples = Counter(
            "llmops_gateway_samples_written", "Sampled records written, by kind.", ["kind"], registry=r
        )
        self.samples_dropped = Counter(
            "llmops_gateway_samples_dropped", "Sampled records dropped, by kind.", ["kind"], registry=r
        )
        self.feedback_total = Counter(
            "llmops_gateway_feedback",
            "Feedback accepted, by the rated answer's version, the feedback's name, and sentiment"
            " (positive, negative, neutral).",
            ["version", "name", "sentiment"],
            registry=r,
        )
        self._feedback_names: set[str] = set()
        self._feedback_series: set[tuple[str, str]] = set()  # (version, name) whose series exist
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def feedback_series(self, version: str, name: str = DEFAULT_FEEDBACK_NAME) -> None:
        """Make the three sentiment series of (version, name) exist, at 0. Prometheus' `increase()`
        counts from a series' first sample, so a counter that appears already at 1 loses that one:
        the gateway calls this for the default name as it issues ids for a version, before any
        feedback on them; a new name gets its series with its first feedback (that one is lost to
        `increase()` unless a scrape came between)."""
        if (version, name) not in self._feedback_series:
            self._feedback_series.add((version, name))
            for sentiment in SENTIMENTS:
                self.feedback_total.labels(version, name, sentiment)

    def feedback(self, version: str, name: str, sentiment: str) -> None:
        """One feedback; the first MAX_FEEDBACK_NAMES names get their own `name` label value, later
        ones count as "other" (names are free-form: the label stays bounded)."""
        if name not in self._feedback_names:
            if len(self._feedback_names) >= MAX_FEEDBACK_NAMES:
                name = "other"
            else:
                self._feedback_names.add(name)
        self.feedback_series(version, name)
        self.feedback_total.labels(version, name, sentiment).inc()

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: `labels()` (a lock and a check of the values)
        costs more than the update itself, several times per request."""
        key = (id(metric), labels)
        if (found := self._children.get(key)) is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def count(self, version: str, code: int, reason: str | None = None) -> None:
        """One answered request: `requests` by version and code, and `errors` by reason if it failed."""
        self.child(self.requests, version, str(code)).inc()
        if reason:
            self.child(self.errors, version, reason).inc()
