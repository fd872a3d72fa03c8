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

The series every proxied request updates (requests, errors, duration, time to first token, queue
wait, tokens, in flight) are `Family` objects: plain numbers that a collector hands to
prometheus_client at scrape time, in the same exposition as its own metrics. prometheus_client's
metrics take a lock and run several Python calls per update (a histogram walks its buckets): the nine
updates of a proxied request cost 6% of its instructions (22k of 391k, callgrind, with
bench/gateway_overhead.py --canned at 64 clients). As `Family` objects, the updates of a plain
request cost 19k instructions timed alone (callgrind, 2026-12-01), of the 285k the whole request
costs in the gateway; `Metrics.answered` then made a request's end one call on its version's kept
series (`Versioned`): 278k a plain request, 373k a streamed one (was 286k, 382k; callgrind,
2000 requests at 64 clients against bench/canned_upstream.py, 2026-12-01). The gateway updates
and scrapes them on its one event loop thread, so they need no lock; the rest stay
prometheus_client's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

disable_created_metrics()  # no *_created series: they double the series count for nothing here

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
NO_VERSION = "none"  # the version label of requests refused before one was chosen
MAX_FEEDBACK_NAMES = 32  # distinct feedback names with their own label value; later ones count as "other"
SENTIMENTS = ("positive", "negative", "neutral")
DEFAULT_FEEDBACK_NAME = "thumbs"


class Value:
    """One series of a counter or gauge `Family`: `inc`, `dec`, `set`, and `value`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class Count(Value):
    """One series of a counter `Family`: `inc` by a non-negative amount (ValueError otherwise, as
    prometheus_client's Counter: a counter never goes down)."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError(f"a counter can only go up; asked to add {amount}")
        self.value += amount


class Buckets:
    """One series of a histogram `Family`: `observe(seconds)`; `counts` per bucket (not cumulative;
    the last is +Inf) and `sum`."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount: le semantics
        self.sum += amount


class Family:
    """A counter, gauge or histogram (`kind`) of the request path, exposed like prometheus_client's
    (`name` without `_total`; histograms with `_bucket`, `_count`, `_sum`). `labels(*values)` is its
    series for those label values, made on first use; a family without labels is its own series
    (`inc`, `observe`). Not thread-safe: the gateway's event loop updates and scrapes it."""

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.kind, self.name, self.documentation = kind, name, documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[tuple[str, ...], Any] = {}
        if not self.labelnames:  # exposed at 0 from the start, as prometheus_client does
            self.labels()

    def labels(self, *values: str) -> Any:
        if (found := self.series.get(values)) is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected, got {values}")
            series = {"histogram": lambda: Buckets(self.bounds), "counter": Count}.get(self.kind, Value)
            found = self.series[values] = series()
        return found

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def observe(self, amount: float) -> None:
        self.labels().observe(amount)

    def metric(self) -> Metric:
        """The family as prometheus_client's exposition takes it."""
        names = list(self.labelnames)
        if self.kind == "histogram":
            family: Metric = HistogramMetricFamily(self.name, self.documentation, labels=names)
            les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
            for values, h in self.series.items():
                total, buckets = 0, []
                for le, n in zip(les, h.counts, strict=True):
                    total += n
                    buckets.append((le, total))
                family.add_metric(list(values), buckets, h.sum)  # type: ignore[attr-defined]
            return family
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = kind(self.name, self.documentation, labels=names)
        for values, v in self.series.items():
            family.add_metric(list(values), v.value)  # type: ignore[attr-defined]
        return family


class Families:
    """The collector of the `Family` metrics (registered in the gateway's registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.families: list[Family] = []
        registry.register(self)

    def add(self, *args: Any, **kwargs: Any) -> Family:
        family = Family(*args, **kwargs)
        self.families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.metric()


class Versioned:
    """The request path's series of one version (`Metrics.answered`), kept so that a request's end is
    no series lookup per update. Each series is made on first use (as `Family.labels` makes it), so
    the exposition is the same as with one `labels()` per update."""

    __slots__ = ("codes", "completion_tokens", "latency", "prompt_tokens", "reasons")

    def __init__(self) -> None:
        self.latency: Buckets | None = None
        self.prompt_tokens: Count | None = None
        self.completion_tokens: Count | None = None
        self.codes: dict[int, Count] = {}  # `requests` by status code
        self.reasons: dict[str, Count] = {}  # `errors` by reason


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        hot = Families(r)
        self.requests = hot.add(
            "counter",
            "llmops_gateway_requests",
            "Requests answered, by version and HTTP status code.",
            ["version", "code"],
        )
        self.errors = hot.add(
            "counter",
            "llmops_gateway_errors",
            "Failed requests, by version and reason.",
            ["version", "reason"],
        )
        self.latency = hot.add(
            "histogram",
            "llmops_gateway_request_duration_seconds",
            "Time from request to the end of the response, by version.",
            ["version"],
            buckets=LATENCY_BUCKETS,
        )
        self.ttft = hot.add(
            "histogram",
            "llmops_gateway_time_to_first_token_seconds",
            "Time from request to the first streamed token, by version.",
            ["version"],
            buckets=TTFT_BUCKETS,
        )
        self.queue_wait = hot.add(
            "histogram",
            "llmops_gateway_queue_wait_seconds",
            "Time spent waiting for a replica.",
            buckets=LATENCY_BUCKETS,
        )
        self.prompt_tokens = hot.add(
            "counter", "llmops_gateway_prompt_tokens", "Prompt tokens, by version.", ["version"]
        )
        self.completion_tokens = hot.add(
            "counter", "llmops_gateway_completion_tokens", "Completion tokens, by version.", ["version"]
        )
        self.pending = Gauge(
            "llmops_gateway_pending_requests",
            "Requests waiting for a replica (queued while busy, or held while scaled to zero).",
            registry=r,
        )
        self.inflight = hot.add(
            "gauge", "llmops_gateway_inflight_requests", "Requests at the replicas, by version.", ["version"]
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
        self._versioned: dict[str, Versioned] = {}
        self._feedback_series: set[tuple[str, str]] = set()  # (version, name) whose series exist

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

    def count(self, version: str, code: int, reason: str | None = None) -> None:
        """One answered request: `requests` by version and code, and `errors` by reason if it failed."""
        self.requests.labels(version, str(code)).inc()
        if reason:
            self.errors.labels(version, reason).inc()

    def answered(
        self,
        version: str,
        code: int,
        reason: str | None,
        elapsed: float | None,
        queued: float | None,
        tokens: tuple[int, int] | None,
    ) -> None:
        """The updates of one proxied request's end, in one call: `requests` by version and code,
        `errors` by reason if it failed, latency (`elapsed` seconds; None: never past the queue), queue
        wait (`queued` seconds, None: no replica acquired), and (prompt, completion) `tokens` (None: no
        usage; whole non-negative counts, as serving.endpoints.tokens gives them)."""
        if (s := self._versioned.get(version)) is None:
            s = self._versioned[version] = Versioned()
        if (c := s.codes.get(code)) is None:
            c = s.codes[code] = self.requests.labels(version, str(code))
        c.inc()
        if reason:
            if (c := s.reasons.get(reason)) is None:
                c = s.reasons[reason] = self.errors.labels(version, reason)
            c.inc()
        if elapsed is not None:
            if s.latency is None:
                s.latency = self.latency.labels(version)
            s.latency.observe(elapsed)
        if queued is not None:
            self.queue_wait.labels().observe(queued)
        if tokens is not None:
            if s.prompt_tokens is None or s.completion_tokens is None:
                s.prompt_tokens = self.prompt_tokens.labels(version)
                s.completion_tokens = self.completion_tokens.labels(version)
            s.prompt_tokens.inc(tokens[0])
            s.completion_tokens.inc(tokens[1])
