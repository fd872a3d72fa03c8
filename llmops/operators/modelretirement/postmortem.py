"""The post-mortem of a retired model version: what it did while it served, as JSON, Markdown and charts.

ModelRetirement's last step. The caller (the kind's reconcile) passes every fact; nothing here reads
the clock, the cluster or the registry, so the same inputs give the same report (the charts too,
byte for byte, with the same matplotlib):

    metrics = collect(Prometheus(url), namespace="team-a", deployments=["chat"], version="3",
                      start=served_from, end=served_until, alerts=spec.monitoring.alerts)
    report = PostMortem(model="chat-llama", version="3", namespace="team-a", deployments=["chat"],
                        start=served_from, end=served_until, reason="superseded by 4",
                        requested_by="user:alice", manifest=model_version, events=[...],
                        metrics=metrics)
    keys = write(store, "postmortems/chat-llama/3", report)   # postmortem.{json,md} + PNG charts
    status.summary = summary(report)  # "served 41 days, 1.2M requests, 0.3% errors, p95 840 ms; ..."

What `collect` reads, over the window, from the gateway's series (llmops/serving/metrics.py names
them) selected by `namespace`, `model_deployment` (the gateway ServiceMonitor's labels) and the
gateway's own `version` label:

| figure | series |
|---|---|
| requests, by status code | `llmops_gateway_requests_total` (code) |
| 5xx share (not 429, 4xx: as the alerts) | the same |
| errors by reason | `llmops_gateway_errors_total` (reason) |
| p50, p95 latency | `llmops_gateway_request_duration_seconds_bucket` (le) |
| tokens | `llmops_gateway_{prompt,completion}_tokens_total` |
| feedback by sentiment | `llmops_gateway_feedback_total` (sentiment, summed over names) |
| drift | the highest `llmops_drift_score` of the deployments (their prompts, not one version's) |

Counters are read raw, one range query per family with every series' own labels, each point the
series' highest value over the last LOOKBACK_SECONDS or the step if longer
(`max_over_time(...[w])`): a counter only rises, so that is its latest value, and a series that
ended (a gateway pod replaced) keeps its last value for one more step instead of losing what it
counted since the previous point. Their increases are summed here: a counter's increase is the sum
of its rises, a fall being a restart (the new value counts whole), and a series first seen after the
window's first evaluation counts from 0, because it was born then (Prometheus' `increase()`
extrapolates, and misses what a series held at its first scrape: serving.metrics.Metrics.
feedback_series says why). What is lost: what a restarted counter counted before it was seen again,
when it climbed back above its old value within one such window.

The step is a whole number of seconds, at least 1, chosen so that no series has more than
`max_points` (500) points; the first evaluation is moved back from `start` so that the last one falls
exactly on `end` (the window is widened by less than one step at its start).

Percentiles follow Prometheus' `histogram_quantile` (linear interpolation inside the bucket the rank
falls in, 0 as the lower bound of the first bucket, the highest finite bound when the rank falls in
+Inf: https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile), over the
window's bucket increases.

Prometheus unreachable or refusing a query: the report carries `metrics.unavailable` (why) and no
figures; it is still written. A version with no requests in the window reads as never served.
"""

from __future__ import annotations

import io
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from llmops.api.modeldeployment import Alerts
from llmops.operators.prometheus import (
    LOOKBACK_SECONDS,
    MAX_POINTS,
    Grid,
    Prometheus,
    PrometheusError,
    Series,
    counters,
    histogram_quantile,
    increments,
)
from llmops.registry import ModelVersion
from llmops.storage import ObjectStore

# The gateway's series (llmops/serving/metrics.py; a unit test holds these names against it).
REQUESTS = "llmops_gateway_requests_total"
ERRORS = "llmops_gateway_errors_total"
LATENCY_BUCKETS = "llmops_gateway_request_duration_seconds" + "_bucket"  # the histogram's buckets
PROMPT_TOKENS = "llmops_gateway_prompt_tokens_total"
COMPLETION_TOKENS = "llmops_gateway_completion_tokens_total"
FEEDBACK = "llmops_gateway_feedback_total"
DRIFT = "llmops_drift_score"  # the drift monitor's (llmops/serving/drift.py), per deployment
SENTIMENTS = ("positive", "negative", "neutral")

JSON_NAME, MARKDOWN_NAME = "postmortem.json", "postmortem.md"
CHARTS = {  # file name -> title, in the Markdown's order; drawn when the timeline has something to show
    "traffic.png": "Requests per second",
    "errors.png": "Server errors (5xx share)",
    "latency.png": "Latency (ms)",
    "drift.png": "Prompt drift score",
    "feedback.png": "Feedback (cumulative, by sentiment)",
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,63}$")  # gateway_config.VersionLabel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{field} must carry a time zone (UTC), got {value.isoformat()}")
    return value.astimezone(UTC)


class ServingEvent(_Model):
    """A rollout event the version took part in, as the caller found it (audit records, alias history,
    a ModelDeployment's canary status): `kind` canary (it was a canary), promotion (promoted to
    stable), rollback (rolled back, or rolled back to), alias (an alias moved to or from it), rollout
    (it replaced or was replaced at once)."""

    time: datetime
    kind: Literal["canary", "promotion", "rollback", "alias", "rollout"]
    deployment: str | None = Field(None, description="namespace/name of the ModelDeployment, if any.")
    detail: str = Field("", max_length=1024, description="What happened, in a few words.")

    @model_validator(mode="after")
    def _in_utc(self) -> ServingEvent:
        self.time = _utc(self.time, "time")
        return self


class Objective(_Model):
    """One service-level objective of the deployment (spec.monitoring.alerts) against the window.
    `share_over`: the fraction of steps with traffic whose own value was above `target`."""

    name: Literal["error rate", "p95 latency"]
    unit: Literal["ratio", "ms"]
    target: float
    observed: float | None
    met: bool | None = Field(description="observed <= target; None without traffic.")
    share_over: float | None


class Timeline(_Model):
    """The window step by step (`times[i]` is the end of step i); every list has len(times) items.
    Rates and percentiles are over each step; None where a step had no traffic (no sample)."""

    step_seconds: int
    times: list[datetime]
    requests_per_second: list[float]
    error_ratio: list[float | None]
    p50_ms: list[float | None]
    p95_ms: list[float | None]
    feedback: dict[str, list[float]] = Field(description="Sentiment -> feedback counted in each step.")
    drift_score: list[float | None]


class ServingMetrics(_Model):
    """What Prometheus held about the version over the window; see the module docstring for the
    series. All figures are None or empty when `unavailable` says why there are none."""

    source: str | None = Field(None, description="The Prometheus URL read.")
    unavailable: str | None = Field(None, description="Why there are no figures (Prometheus unreachable).")
    requests: int = 0
    by_code: dict[str, int] = Field(default_factory=dict, description="HTTP status code -> requests.")
    server_errors: int = Field(0, description="Requests answered 5xx.")
    client_errors: int = Field(0, description="Requests answered 4xx (429 and client hang-ups, 499, too).")
    error_ratio: float | None = Field(None, description="server_errors / requests; None without requests.")
    errors_by_reason: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    objectives: list[Objective] = Field(default_factory=list)
    drift_max: float | None = None
    drift_last: float | None = None
    feedback: dict[str, int] = Field(default_factory=dict, description="Sentiment -> feedback.")
    first_request: datetime | None = Field(None, description="The step of the first request seen.")
    last_request: datetime | None = Field(None, description="The step of the last request seen.")
    timeline: Timeline | None = None

    @classmethod
    def missing(cls, source: str | None, why: str) -> ServingMetrics:
        return cls(source=source, unavailable=why)


class PostMortem(_Model):
    """The report (postmortem.json, camelCase). `start`/`end`: the serving window, UTC."""

    model: str
    version: str
    namespace: str
    deployments: list[str]
    start: datetime
    end: datetime
    reason: str = Field(max_length=4096)
    requested_by: str = Field(max_length=512)
    manifest: ModelVersion | None = Field(None, description="The registry manifest: gates, metrics, lineage.")
    events: list[ServingEvent] = Field(default_factory=list)
    metrics: ServingMetrics

    @model_validator(mode="after")
    def _window(self) -> PostMortem:
        self.start, self.end = _utc(self.start, "start"), _utc(self.end, "end")
        if self.end < self.start:
            raise ValueError(f"end ({self.end.isoformat()}) is before start ({self.start.isoformat()})")
        self.events = sorted(self.events, key=lambda e: e.time)
        return self

    @property
    def served(self) -> bool:
        return self.metrics.unavailable is None and self.metrics.requests > 0


# Collecting ------------------------------------------------------------------------------------


def selector(namespace: str, deployments: Sequence[str], version: str | None = None) -> str:
    """The label matchers of the version's series: `{namespace="..", model_deployment=~"a|b", version=".."}`.
    Raises ValueError naming the field for a name that is not a Kubernetes name (or a version label)."""
    if not _DNS_LABEL.match(namespace):
        raise ValueError(f"namespace: {namespace!r} is not a Kubernetes namespace name")
    if not deployments:
        raise ValueError("deployments: name at least one ModelDeployment")
    for name in deployments:
        if not _DNS_SUBDOMAIN.match(name):
            raise ValueError(f"deployments: {name!r} is not a Kubernetes object name")
    names = sorted(set(deployments))
    if len(names) == 1:
        md = f'model_deployment="{names[0]}"'
    else:  # RE2, anchored by Prometheus; in a PromQL string a backslash is written twice
        md = 'model_deployment=~"' + "|".join(n.replace(".", "\\\\.") for n in names) + '"'
    matchers = [f'namespace="{namespace}"', md]
    if version is not None:
        if not _VERSION.match(version):
            raise ValueError(f"version: {version!r} is not a version label ([A-Za-z0-9._-], 1-63)")
        matchers.append(f'version="{version}"')
    return "{" + ",".join(matchers) + "}"


def _sum(rows: Iterable[list[float]], n: int) -> list[float]:
    total = [0.0] * n
    for row in rows:
        for i, v in enumerate(row):
            total[i] += v
    return total


def _by_label(series: list[Series], label: str, grid: Grid) -> dict[str, list[float]]:
    """Increments per step, summed by the value of `label`."""
    rows: dict[str, list[list[float]]] = defaultdict(list)
    for s in series:
        rows[s.labels.get(label, "")].append(increments(s, grid))
    return {key: _sum(value, grid.n) for key, value in rows.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _objective(
    name: Literal["error rate", "p95 latency"],
    target: float,
    observed: float | None,
    steps: list[float | None],
) -> Objective:
    seen = [v for v in steps if v is not None]
    return Objective(
        name=name,
        unit="ratio" if name == "error rate" else "ms",
        target=target,
        observed=observed,
        met=None if observed is None else observed <= target,
        share_over=sum(v > target for v in seen) / len(seen) if seen else None,
    )


def collect(
    prometheus: Prometheus | None,
    *,
    namespace: str,
    deployments: Sequence[str],
    version: str,
    start: datetime,
    end: datetime,
    alerts: Alerts | None = None,
    max_points: int = MAX_POINTS,
) -> ServingMetrics:
    """What Prometheus holds about `version` of the ModelDeployments `deployments` in `namespace`
    from `start` to `end` (time-zone aware; end >= start), with `alerts`' error-rate and p95 targets
    as objectives. Seven range queries. `prometheus` None, unreachable or refusing a query: a
    ServingMetrics whose `unavailable` says why (never an exception for that). ValueError for bad
    names (naming the field) or a window that ends before it starts."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end < start:
        raise ValueError(f"end ({end.isoformat()}) is before start ({start.isoformat()})")
    ours = selector(namespace, deployments, version)
    deployment = selector(namespace, deployments)
    if prometheus is None:
        return ServingMetrics.missing(None, "no Prometheus is configured for the operator")
    grid = Grid.over(start, end, max_points)

    window = f"[{max(grid.step, LOOKBACK_SECONDS)}s]"

    def read(promql: str) -> list[Series]:
        return counters(prometheus, promql, grid)

    try:
        requests = read(REQUESTS + ours)
        errors = read(ERRORS + ours)
        buckets = read(LATENCY_BUCKETS + ours)
        prompt_tokens = read(PROMPT_TOKENS + ours)
        completion_tokens = read(COMPLETION_TOKENS + ours)
        feedback = read(FEEDBACK + ours)
        drift = prometheus.query_range(  # the highest score in each step, of any of the deployments
            f"max(max_over_time({DRIFT}{deployment}{window}))", grid.start, grid.end, grid.step
        )
    except PrometheusError as e:
        return ServingMetrics.missing(prometheus.url, f"Prometheus refused a query: {e}")
    except OSError as e:  # urllib.error.URLError, a timeout, a refused connection
        why = getattr(e, "reason", None) or e
        return ServingMetrics.missing(prometheus.url, f"Prometheus could not be reached: {why}")

    n = grid.n
    by_code = _by_label(requests, "code", grid)
    every = _sum(by_code.values(), n)
    failed = _sum((v for code, v in by_code.items() if code.startswith("5")), n)
    by_le = {float(le): v for le, v in _by_label(buckets, "le", grid).items() if le}
    sentiments = _by_label(feedback, "sentiment", grid)
    feedback_steps = {s: sentiments.get(s, [0.0] * n) for s in SENTIMENTS}
    total, server_errors = round(sum(every)), round(sum(failed))

    def quantile(q: float, i: int | None = None) -> float | None:
        counts = [(le, sum(v) if i is None else v[i]) for le, v in by_le.items()]
        return _ms(histogram_quantile(q, counts))

    error_steps = [failed[i] / every[i] if every[i] > 0 else None for i in range(n)]
    p95_steps = [quantile(0.95, i) for i in range(n)]
    active = [i for i in range(n) if every[i] > 0]
    drift_points = {grid.index(t): v for s in drift for t, v in s.points}
    drift_steps = [drift_points.get(i) for i in range(n)]
    drift_seen = [v for v in drift_steps if v is not None]
    error_ratio = server_errors / total if total else None
    p95 = quantile(0.95)
    objectives = []
    if alerts is not None and alerts.max_error_rate is not None:
        objectives.append(_objective("error rate", alerts.max_error_rate, error_ratio, error_steps))
    if alerts is not None and alerts.p95_latency_ms is not None:
        objectives.append(_objective("p95 latency", alerts.p95_latency_ms, p95, p95_steps))
    return ServingMetrics(
        source=prometheus.url,
        requests=total,
        by_code={code: round(sum(v)) for code, v in sorted(by_code.items()) if round(sum(v))},
        server_errors=server_errors,
        client_errors=round(sum(sum(v) for code, v in by_code.items() if code.startswith("4"))),
        error_ratio=error_ratio,
        errors_by_reason={
            r: round(sum(v)) for r, v in sorted(_by_label(errors, "reason", grid).items()) if round(sum(v))
        },
        prompt_tokens=round(sum(sum(increments(s, grid)) for s in prompt_tokens)),
        completion_tokens=round(sum(sum(increments(s, grid)) for s in completion_tokens)),
        p50_ms=quantile(0.5),
        p95_ms=p95,
        objectives=objectives,
        drift_max=max(drift_seen) if drift_seen else None,
        drift_last=drift_seen[-1] if drift_seen else None,
        feedback={s: round(sum(v)) for s, v in feedback_steps.items()},
        first_request=grid.time(active[0]) if active else None,
        last_request=grid.time(active[-1]) if active else None,
        timeline=Timeline(
            step_seconds=grid.step,
            times=[grid.time(i) for i in range(n)],
            requests_per_second=[v / grid.step for v in every],
            error_ratio=error_steps,
            p50_ms=[quantile(0.5, i) for i in range(n)],
            p95_ms=p95_steps,
            feedback=feedback_steps,
            drift_score=drift_steps,
        ),
    )


# Words -----------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """41 days, 5 hours, 12 minutes, 40 seconds: the largest unit that gives at least 2 (1 day below 2)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f} {unit}s"
    whole = round(seconds)
    return f"{whole} second{'' if whole == 1 else 's'}"


def count(n: int) -> str:
    """812, 12.3k, 1.2M, 3.4B."""
    for suffix, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + suffix
    return str(n)


def percent(ratio: float) -> str:
    """0.3%; <0.1% for a share above 0 that rounds to 0."""
    return "<0.1%" if 0 < ratio < 0.0005 else f"{ratio:.1%}"


def milliseconds(ms: float) -> str:
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def gates_verdict(manifest: ModelVersion | None) -> str:
    if manifest is None:
        return "no registry manifest"
    if manifest.ungated:
        return "ungated"
    failed = [g.metric for g in manifest.gates if not g.passed]
    return "gates passed" if not failed else "gates failed: " + ", ".join(failed)


def summary(report: PostMortem) -> str:
    """One line for the ModelRetirement's status, e.g. "served 41 days, 1.2M requests, 0.3% errors,
    p95 840 ms; gates passed; retired: superseded by 4" (at most about 300 characters)."""
    m = report.metrics
    span = duration((report.end - report.start).total_seconds())
    if m.unavailable is not None:
        serving = f"window {span}; no metrics ({m.unavailable[:100]})"
    elif not m.requests:
        serving = f"never served (no requests in {span})"
    else:
        serving = f"served {span}, {count(m.requests)} requests, {percent(m.error_ratio or 0)} errors"
        if m.p95_ms is not None:
            serving += f", p95 {milliseconds(m.p95_ms)}"
    reason = " ".join(report.reason.split())
    reason = reason if len(reason) <= 120 else reason[:119] + "…"
    return f"{serving}; {gates_verdict(report.manifest)}; retired: {reason or 'no reason given'}"


# Charts ----------------------------------------------------------------------------------------


def chart_names(report: PostMortem) -> list[str]:
    """The charts the report has (file names, CHARTS' order): those whose timeline shows something."""
    t = report.metrics.timeline
    if t is None or not report.served:
        return []
    has = {
        "traffic.png": True,
        "latency.png": any(v is not None for v in t.p95_ms),
        "errors.png": True,
        "feedback.png": any(sum(v) > 0 for v in t.feedback.values()),
        "drift.png": any(v is not None for v in t.drift_score),
    }
    return [name for name in CHARTS if has[name]]


def _nan(values: Sequence[float | None], scale: float = 1.0) -> list[float]:
    return [math.nan if v is None else v * scale for v in values]


def draw(report: PostMortem, name: str) -> bytes:
    """The PNG of chart `name` (one of CHARTS). matplotlib's Agg canvas on a Figure of its own: no
    display, no pyplot state; the PNG carries no Software/date metadata, so the bytes are the same
    for the same report."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    t = report.metrics.timeline
    if t is None or name not in CHARTS:
        raise ValueError(f"no chart {name!r} in this report")
    fig = Figure(figsize=(8, 3), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    times = t.times
    objectives = {o.name: o.target for o in report.metrics.objectives}
    if name == "traffic.png":
        ax.plot(times, t.requests_per_second, label="requests/s", color="tab:blue")
        ax.set_ylabel("requests/s")
    elif name == "latency.png":
        ax.plot(times, _nan(t.p50_ms), label="p50", color="tab:blue", marker=".", markersize=3)
        ax.plot(times, _nan(t.p95_ms), label="p95", color="tab:orange", marker=".", markersize=3)
        if "p95 latency" in objectives:
            ax.axhline(objectives["p95 latency"], color="tab:red", linestyle="--", label="p95 objective")
        ax.set_ylabel("ms")
    elif name == "errors.png":
        ax.plot(times, _nan(t.error_ratio, 100), label="5xx share", color="tab:red", marker=".", markersize=3)
        if "error rate" in objectives:
            ax.axhline(objectives["error rate"] * 100, color="black", linestyle="--", label="objective")
        ax.set_ylabel("% of requests")
    elif name == "feedback.png":
        colours = {"positive": "tab:green", "negative": "tab:red", "neutral": "tab:gray"}
        for sentiment, steps in t.feedback.items():
            running, total = [], 0.0
            for v in steps:
                total += v
                running.append(total)
            ax.plot(times, running, label=sentiment, color=colours.get(sentiment))
        ax.set_ylabel("feedback")
    else:
        ax.plot(times, _nan(t.drift_score), label="drift score", color="tab:purple")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("1 - p")
    ax.set_title(f"{report.model} version {report.version}: {CHARTS[name]}", fontsize=10)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlim(times[0], times[-1])
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


# Markdown --------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _when(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}g}"


def render_markdown(report: PostMortem) -> str:
    """postmortem.md: the summary, the retirement, traffic, errors, latency, objectives, drift,
    feedback, gates and evaluations, lineage, rollout events, and where the figures came from, with
    the charts (chart_names) linked as images beside it."""
    m, charts = report.metrics, set(chart_names(report))
    out = [f"# Post-mortem: {report.model} version {report.version}", "", f"> {summary(report)}", ""]
    out += ["## Retirement", ""]
    out += _table(
        ["", ""],
        [
            ("Model", f"{report.model} version {report.version}"),
            ("Reason", report.reason or "no reason given"),
            ("Requested by", report.requested_by),
            ("Deployments", ", ".join(f"{report.namespace}/{d}" for d in report.deployments)),
            ("Serving window", f"{_when(report.start)} to {_when(report.end)}"),
            ("Duration", duration((report.end - report.start).total_seconds())),
        ],
    )

    def chart(name: str) -> None:
        if name in charts:
            out.extend([f"![{CHARTS[name]}]({name})", ""])

    out += ["## Traffic", ""]
    if m.unavailable is not None:
        out += [f"No figures: {m.unavailable}.", ""]
    elif not m.requests:
        out += ["The version answered no requests in the window: it never served.", ""]
    else:
        rows = [
            ("Requests", m.requests),
            ("First request", _when(m.first_request)),
            ("Last request", _when(m.last_request)),
            ("Prompt tokens", m.prompt_tokens),
            ("Completion tokens", m.completion_tokens),
        ]
        out += _table(["", ""], rows)
        out += _table(["Status code", "Requests"], m.by_code.items())
        chart("traffic.png")
        out += ["## Errors", ""]
        out += _table(
            ["", ""],
            [
                ("Server errors (5xx)", f"{m.server_errors} ({percent(m.error_ratio or 0)})"),
                ("Client errors (4xx, 429, 499)", m.client_errors),
            ],
        )
        if m.errors_by_reason:
            out += _table(["Reason (llmops_gateway_errors_total)", "Count"], m.errors_by_reason.items())
        chart("errors.png")
        out += ["## Latency", ""]
        out += _table(
            ["Percentile", "Request to last byte"],
            [("p50", _number(m.p50_ms) + " ms"), ("p95", _number(m.p95_ms) + " ms")],
        )
        chart("latency.png")
        out += ["## Service-level objectives", ""]
        if m.objectives:
            out += _table(
                ["Objective", "Target", "Observed", "Met", "Share of steps over"],
                [
                    (
                        o.name,
                        percent(o.target) if o.unit == "ratio" else milliseconds(o.target),
                        ""
                        if o.observed is None
                        else percent(o.observed)
                        if o.unit == "ratio"
                        else milliseconds(o.observed),
                        {True: "yes", False: "no", None: ""}[o.met],
                        "" if o.share_over is None else percent(o.share_over),
                    )
                    for o in m.objectives
                ],
            )
        else:
            out += ["The deployments set no alert thresholds (spec.monitoring.alerts).", ""]
        out += ["## Drift", ""]
        if m.drift_max is None:
            out += ["No drift score in the window (no drift monitor, or it scored nothing).", ""]
        else:
            out += [
                f"Highest drift score {_number(m.drift_max)}, last {_number(m.drift_last)} (the"
                " deployments' prompts, whichever version answered them).",
                "",
            ]
            chart("drift.png")
        out += ["## Feedback", ""]
        if not any(m.feedback.values()):
            out += ["No feedback on this version's answers.", ""]
        else:
            total = sum(m.feedback.values())
            out += _table(
                ["Sentiment", "Feedback", "Share"],
                [(s, c, percent(c / total)) for s, c in m.feedback.items()],
            )
            chart("feedback.png")

    out += ["## Gates and evaluations", ""]
    manifest = report.manifest
    if manifest is None:
        out += ["No registry manifest was given.", ""]
    else:
        out += [f"{gates_verdict(manifest).capitalize()}; registered {manifest.created_at}.", ""]
        if manifest.gates:
            out += _table(
                ["Metric", "Rule", "Value", "Passed"],
                [
                    (g.metric, f"{g.operator} {g.threshold:g}", _number(g.value), "yes" if g.passed else "no")
                    for g in manifest.gates
                ],
            )
        baseline = manifest.lineage.baseline
        if manifest.metrics:
            head = ["Evaluation", "Value"]
            if baseline is not None:
                head.append(f"Baseline {baseline.name} version {baseline.version}")
            rows = [
                (k, _number(v), *([_number(baseline.metrics.get(k))] if baseline is not None else []))
                for k, v in sorted(manifest.metrics.items())
            ]
            out += _table(head, rows)
        lineage = manifest.lineage
        out += ["## Lineage", ""]
        out += _table(
            ["", ""],
            [
                (k, v)
                for k, v in (
                    ("Training job", lineage.parent_job),
                    ("Base model", lineage.base_model),
                    ("Method", lineage.method),
                    ("Data digest", lineage.data_digest),
                    ("Code version", lineage.code_version),
                    ("Image", lineage.image),
                )
                if v
            ],
        )
        if lineage.data:
            out += _table(
                ["Data source", "Rows", "sha256"],
                [
                    (d.get("uri") or d.get("name") or d.get("path"), d.get("rows"), d.get("sha256"))
                    for d in lineage.data
                ],
            )

    out += ["## Canaries, promotions and rollbacks", ""]
    if report.events:
        out += _table(
            ["Time", "Event", "Deployment", "Detail"],
            [(_when(e.time), e.kind, e.deployment, e.detail) for e in report.events],
        )
    else:
        out += ["None recorded.", ""]

    out += ["## Source", ""]
    if m.source is None:
        out += [m.unavailable or "No Prometheus.", ""]
    else:
        step = f"; one point every {m.timeline.step_seconds} s" if m.timeline is not None else ""
        out += [
            f"Prometheus at {m.source}, the gateway's series with namespace={report.namespace},"
            f" model_deployment in ({', '.join(report.deployments)}), version={report.version}{step}.",
            "",
        ]
    return "\n".join(out).rstrip("\n") + "\n"


# Writing ---------------------------------------------------------------------------------------


def files(report: PostMortem) -> dict[str, bytes]:
    """Every file of the report, name -> bytes: the charts, postmortem.md, postmortem.json (last)."""
    out = {name: draw(report, name) for name in chart_names(report)}
    out[MARKDOWN_NAME] = render_markdown(report).encode()
    out[JSON_NAME] = report.model_dump_json(by_alias=True, indent=2).encode()
    return out


def write(store: ObjectStore, prefix: str, report: PostMortem) -> list[str]:
    """Write the report under `prefix` in `store` (overwriting: a retried step writes the same
    bytes) and return the keys written, postmortem.json last. Storage errors propagate
    (llmops/operators/registry_access.py describes them)."""
    base = prefix.strip("/")
    keys = []
    for name, data in files(report).items():
        key = f"{base}/{name}" if base else name
        store.put_bytes(key, data)
        keys.append(key)
    return keys
