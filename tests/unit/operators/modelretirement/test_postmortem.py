"""The post-mortem (pure): the window's grid, counter increases, Prometheus' histogram_quantile, the
figures `collect` derives, the Markdown and the charts, the summary line, and the files written.

`collect` reads Prometheus through `query_range`; here a table of Series stands in for its answers
(the arithmetic is what these tests check); tests/serving/test_serving_postmortem.py reads a real
Prometheus scraping a real gateway."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import math
import re

import pytest
from prometheus_client import CollectorRegistry

from llmops.api.modeldeployment import Alerts
from llmops.dev.cluster import free_port
from llmops.operators.modelretirement import postmortem as pm
from llmops.operators.prometheus import Prometheus, Series
from llmops.registry import BaselineRecord, GateVerdict, Lineage, ModelVersion
from llmops.storage import LocalStore

UTC = dt.UTC
START = dt.datetime(2026, 10, 20, 9, 0, tzinfo=UTC)
END = START + dt.timedelta(seconds=100)


class Answers:
    """Series by metric name, as `Prometheus.query_range` returns them."""

    url = "http://prometheus.test:9090"

    def __init__(self, by_name: dict[str, list[Series]]) -> None:
        self.by_name = by_name
        self.asked: list[tuple[str, dt.datetime, dt.datetime, float]] = []

    def query_range(self, promql: str, start: dt.datetime, end: dt.datetime, step: float) -> list[Series]:
        self.asked.append((promql, start, end, step))
        return self.by_name.get(re.search(r"llmops_[a-z_]+", promql).group(0), [])  # type: ignore[union-attr]


def at(seconds: float) -> float:
    return START.timestamp() + seconds


def counter(labels: dict[str, str], *values: tuple[float, float]) -> Series:
    return Series(labels, [(at(t), v) for t, v in values])


def manifest() -> ModelVersion:
    return ModelVersion(
        name="chat-llama",
        version="3",
        created_at="2026-10-19T08:00:00+00:00",
        artifacts={"model.safetensors": "ab" * 32},
        metrics={"eval_loss": 1.25, "accuracy": 0.81},
        gates=[
            GateVerdict(metric="eval_loss", operator="<=", threshold=2.0, value=1.25, passed=True),
            GateVerdict(metric="accuracy", operator=">=", threshold=0.7, value=0.81, passed=True),
        ],
        lineage=Lineage(
            parent_job="team-a/tune-3",
            base_model="tiny",
            method="lora",
            data=[{"uri": "s3://data/chat.jsonl", "rows": 1200, "sha256": "cd" * 32}],
            data_digest="ef" * 32,
            baseline=BaselineRecord(name="chat-llama", version="2", metrics={"eval_loss": 1.5}),
        ),
    )


def served() -> Answers:
    """100 s at a 1 s step: 10 requests born after the start (8 x 200, 2 x 502), and a second gateway
    pod present from the start (baseline 100) that restarts and answers 5 more; latency buckets for
    the 15; 3 feedback; a drift score."""
    pod = {"namespace": "team-a", "model_deployment": "chat", "version": "3"}
    requests = [
        counter({**pod, "code": "200", "pod": "a"}, (10, 3), (20, 8)),
        counter({**pod, "code": "502", "pod": "a"}, (30, 2)),
        counter({**pod, "code": "200", "pod": "b"}, (0, 100), (40, 102), (50, 1), (60, 3)),  # a restart
    ]
    errors = [counter({**pod, "reason": "upstream_error", "pod": "a"}, (30, 2))]
    buckets = []
    for le, counts in {"0.1": (0, 9), "0.5": (0, 12), "1": (0, 14), "+Inf": (0, 15)}.items():
        buckets.append(counter({**pod, "le": le, "pod": "a"}, (0, counts[0]), (30, counts[1])))
    feedback = [
        counter({**pod, "name": "thumbs", "sentiment": "positive"}, (0, 0), (35, 2)),
        counter({**pod, "name": "thumbs", "sentiment": "negative"}, (0, 0), (36, 1)),
        counter({**pod, "name": "thumbs", "sentiment": "neutral"}, (0, 0)),
    ]
    drift = [Series({}, [(at(0), 0.2), (at(50), 0.97), (at(100), 0.5)])]
    tokens = [counter({**pod, "pod": "a"}, (10, 30), (30, 45))]
    return Answers(
        {
            "llmops_gateway_requests_total": requests,
            "llmops_gateway_errors_total": errors,
            "llmops_gateway_request_duration_seconds_bucket": buckets,
            "llmops_gateway_prompt_tokens_total": tokens,
            "llmops_gateway_completion_tokens_total": [counter(pod, (10, 4), (30, 20))],
            "llmops_gateway_feedback_total": feedback,
            "llmops_drift_score": drift,
        }
    )


def collected(answers: Answers | None = None, alerts: Alerts | None = None) -> pm.ServingMetrics:
    return pm.collect(
        answers or served(),  # type: ignore[arg-type]
        namespace="team-a",
        deployments=["chat"],
        version="3",
        start=START,
        end=END,
        alerts=alerts,
    )


def report(metrics: pm.ServingMetrics, **extra) -> pm.PostMortem:
    fields = {
        "model": "chat-llama",
        "version": "3",
        "namespace": "team-a",
        "deployments": ["chat"],
        "start": START,
        "end": END,
        "reason": "superseded by 4",
        "requested_by": "user:alice",
        "manifest": manifest(),
        "metrics": metrics,
        **extra,
    }
    return pm.PostMortem(**fields)


# The grid, the increases, the quantile ---------------------------------------------------------


@pytest.mark.parametrize("days", [0, 1 / 86400, 1 / 24, 1, 41, 400])
def test_the_grid_ends_on_end_covers_start_and_stays_under_500_points(days: float) -> None:
    end = START + dt.timedelta(days=days)
    grid = pm.Grid.over(START, end)
    assert grid.n <= 500 and grid.step >= 1 and grid.step == int(grid.step)
    assert grid.end == end and grid.start <= START and START - grid.start < dt.timedelta(seconds=grid.step)


def test_a_counter_born_in_the_window_counts_whole_and_a_restart_counts_its_new_value() -> None:
    grid = pm.Grid(at(0), 10, 11)
    assert pm.increments(counter({}, (0, 7), (10, 9), (20, 9)), grid)[:3] == [0, 2, 0]  # baseline at start
    assert sum(pm.increments(counter({}, (30, 4), (40, 6)), grid)) == 6  # born at 30: from 0
    assert sum(pm.increments(counter({}, (0, 50), (10, 60), (20, 5), (30, 8)), grid)) == 10 + 5 + 3
    assert sum(pm.increments(counter({}, (-500, 1), (1000, 9)), grid)) == 0  # outside the grid


def test_histogram_quantile_is_prometheus_rule() -> None:
    buckets = [(0.1, 50), (0.5, 90), (1.0, 100), (math.inf, 100)]
    assert pm.histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert pm.histogram_quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * 5 / 10)
    assert pm.histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    # The rank in +Inf: the highest finite bound; no observations or no +Inf bucket: no answer.
    assert pm.histogram_quantile(0.99, [(0.1, 1), (math.inf, 10)]) == 0.1
    assert pm.histogram_quantile(0.5, [(0.1, 0), (math.inf, 0)]) is None
    assert pm.histogram_quantile(0.5, [(0.1, 3), (0.2, 4)]) is None


def test_the_selector_names_the_version_and_refuses_bad_names() -> None:
    assert pm.selector("team-a", ["chat"], "3") == '{namespace="team-a",model_deployment="chat",version="3"}'
    assert pm.selector("team-a", ["b.x", "a"]) == '{namespace="team-a",model_deployment=~"a|b\\\\.x"}'
    for kwargs, field in (
        ({"namespace": "Team A", "deployments": ["chat"]}, "namespace"),
        ({"namespace": "a", "deployments": []}, "deployments"),
        ({"namespace": "a", "deployments": ['chat"}']}, "deployments"),
        ({"namespace": "a", "deployments": ["chat"], "version": '3"} or vector(1)'}, "version"),
    ):
        with pytest.raises(ValueError, match=f"^{field}:"):
            pm.selector(**kwargs)


def test_the_series_names_are_the_gateways() -> None:
    from llmops.serving.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.count("3", 200)
    metrics.latency.labels("3").observe(0.2)
    metrics.feedback("3", "thumbs", "positive")
    metrics.prompt_tokens.labels("3").inc()
    metrics.completion_tokens.labels("3").inc()
    metrics.count("3", 502, "upstream_error")
    names = {s.name for family in registry.collect() for s in family.samples}
    for name in (
        pm.REQUESTS,
        pm.ERRORS,
        pm.LATENCY_BUCKETS,
        pm.PROMPT_TOKENS,
        pm.COMPLETION_TOKENS,
        pm.FEEDBACK,
    ):
        assert name in names, name
    import llmops.serving.drift  # its monitor needs reference data to start: its source names the gauge

    assert f'Gauge("{pm.DRIFT}"' in inspect.getsource(llmops.serving.drift.DriftMonitor)


# collect ---------------------------------------------------------------------------------------


def test_collect_sums_the_raw_counters_over_the_window() -> None:
    answers = served()
    m = collected(answers, Alerts(max_error_rate=0.1, p95_latency_ms=400))
    assert [a[3] for a in answers.asked] == [1] * 7 and answers.asked[0][2] == END
    assert all('version="3"' in q for q, *_ in answers.asked[:6])
    assert answers.asked[0][0] == (
        'max_over_time(llmops_gateway_requests_total{namespace="team-a",model_deployment="chat",version="3"}[300s])'
    )
    assert answers.asked[6][0] == (
        'max(max_over_time(llmops_drift_score{namespace="team-a",model_deployment="chat"}[300s]))'
    )
    # pod a: 8 + 2 (born after the start); pod b: 102 - 100, then 3 after its restart.
    assert (m.requests, m.by_code, m.server_errors, m.client_errors) == (15, {"200": 13, "502": 2}, 2, 0)
    assert m.error_ratio == pytest.approx(2 / 15)
    assert m.errors_by_reason == {"upstream_error": 2}
    assert (m.prompt_tokens, m.completion_tokens) == (45, 20)
    # 15 observations: 9 <= 0.1 s, 12 <= 0.5, 14 <= 1, 15 in all.
    assert m.p50_ms == pytest.approx(100 * 7.5 / 9, abs=1e-3)  # to the microsecond
    assert m.p95_ms == 1000  # rank 14.25 falls in +Inf: the highest finite bound, 1 s
    assert m.feedback == {"positive": 2, "negative": 1, "neutral": 0}
    assert (m.drift_max, m.drift_last) == (0.97, 0.5)
    assert (m.first_request, m.last_request) == (
        START + dt.timedelta(seconds=10),
        START + dt.timedelta(seconds=60),
    )
    rate, p95 = m.objectives
    assert (rate.name, rate.target, rate.met, rate.share_over) == (
        "error rate",
        0.1,
        False,
        1 / 6,
    )  # 6 steps with traffic
    assert (p95.name, p95.target, p95.met) == ("p95 latency", 400, False)
    t = m.timeline
    assert t is not None and len(t.times) == 101 and t.times[-1] == END and t.step_seconds == 1
    assert sum(t.requests_per_second) == 15 and t.error_ratio[30] == 1.0 and t.error_ratio[31] is None
    assert sum(t.feedback["positive"]) == 2


def test_unreachable_prometheus_is_said_not_raised() -> None:
    m = collected(Prometheus(f"http://127.0.0.1:{free_port()}", timeout=5))  # type: ignore[arg-type]
    assert m.unavailable is not None and m.unavailable.startswith("Prometheus could not be reached")
    assert m.requests == 0 and m.timeline is None
    r = report(m)
    assert pm.chart_names(r) == []
    text = pm.render_markdown(r)
    assert f"No figures: {m.unavailable}." in text and "![" not in text
    assert pm.summary(r).startswith("window 100 seconds; no metrics (Prometheus could not be reached")
    none = pm.collect(None, namespace="a", deployments=["b"], version="1", start=START, end=END)
    assert none.unavailable == "no Prometheus is configured for the operator"


def test_a_version_that_never_served() -> None:
    answers = Answers({})
    m = collected(answers)
    assert (m.requests, m.error_ratio, m.p95_ms, m.first_request) == (0, None, None, None)
    r = report(m, end=START + dt.timedelta(days=3))
    assert pm.summary(r) == "never served (no requests in 3 days); gates passed; retired: superseded by 4"
    assert pm.chart_names(r) == []
    assert "it never served" in pm.render_markdown(r)
    # 41 days: a step of 7099 s (500 points), each point the highest value over its own step.
    long = pm.collect(
        answers,  # type: ignore[arg-type]
        namespace="team-a",
        deployments=["chat"],
        version="3",
        start=START,
        end=START + dt.timedelta(days=41),
    )
    assert long.timeline is not None and len(long.timeline.times) == 500
    assert answers.asked[-1][3] == 7099 and answers.asked[-1][0].endswith("[7099s]))")


def test_times_must_carry_a_zone_and_end_follows_start() -> None:
    with pytest.raises(ValueError, match="start must carry a time zone"):
        pm.collect(
            None, namespace="a", deployments=["b"], version="1", start=START.replace(tzinfo=None), end=END
        )
    with pytest.raises(ValueError, match="before start"):
        report(pm.ServingMetrics(), end=START - dt.timedelta(seconds=1))


# Words, Markdown, charts, files ----------------------------------------------------------------


def test_the_summary_line() -> None:
    m = pm.ServingMetrics(requests=1_234_567, server_errors=3704, error_ratio=0.003, p95_ms=840)
    r = report(m, end=START + dt.timedelta(days=41, hours=5))
    assert pm.summary(r) == (
        "served 41 days, 1.2M requests, 0.3% errors, p95 840 ms; gates passed; retired: superseded by 4"
    )
    failing = manifest()
    failing.gates[1].passed = False
    assert "; gates failed: accuracy; " in pm.summary(report(m, manifest=failing))
    assert "; no registry manifest; " in pm.summary(report(m, manifest=None))
    assert len(pm.summary(report(m, reason="x" * 4000))) < 300
    assert (pm.count(999), pm.count(12_345), pm.count(3_400_000_000)) == ("999", "12.3k", "3.4B")
    assert (pm.percent(0.0001), pm.percent(0), pm.duration(90), pm.duration(7200)) == (
        "<0.1%",
        "0.0%",
        "90 seconds",
        "2 hours",
    )


def test_the_markdown_has_every_section_with_the_figures() -> None:
    events = [
        pm.ServingEvent(time=START + dt.timedelta(seconds=50), kind="rollback", deployment="team-a/chat"),
        pm.ServingEvent(time=START, kind="canary", deployment="team-a/chat", detail="10% | then 50%"),
    ]
    r = report(collected(alerts=Alerts(max_error_rate=0.1, p95_latency_ms=400)), events=events)
    text = pm.render_markdown(r)
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# Post-mortem: chat-llama version 3",
        "## Retirement",
        "## Traffic",
        "## Errors",
        "## Latency",
        "## Service-level objectives",
        "## Drift",
        "## Feedback",
        "## Gates and evaluations",
        "## Lineage",
        "## Canaries, promotions and rollbacks",
        "## Source",
    ]
    assert f"> {pm.summary(r)}" in text
    assert "| Requests | 15 |" in text and "| 502 | 2 |" in text
    assert "| Server errors (5xx) | 2 (13.3%) |" in text and "| upstream_error | 2 |" in text
    assert "| error rate | 10.0% | 13.3% | no | 16.7% |" in text
    assert "| negative | 1 | 33.3% |" in text and "Highest drift score 0.97, last 0.5" in text
    assert "| accuracy | >= 0.7 | 0.81 | yes |" in text
    assert "| eval_loss | 1.25 | 1.5 |" in text  # with the baseline's score
    assert "| s3://data/chat.jsonl | 1200 | " + "cd" * 32 + " |" in text
    rows = [line for line in text.splitlines() if "team-a/chat |" in line and line.startswith("| 2026")]
    assert rows == [
        "| 2026-10-20 09:00:00 UTC | canary | team-a/chat | 10% \\| then 50% |",
        "| 2026-10-20 09:00:50 UTC | rollback | team-a/chat |  |",
    ]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert (
        images
        == pm.chart_names(r)
        == ["traffic.png", "errors.png", "latency.png", "drift.png", "feedback.png"]
    )


def test_the_files_are_written_and_read_back_the_same(tmp_path) -> None:
    r = report(collected())
    store = LocalStore(tmp_path)
    keys = pm.write(store, "postmortems/chat-llama/3/", r)
    assert keys == [
        f"postmortems/chat-llama/3/{n}" for n in [*pm.chart_names(r), "postmortem.md", "postmortem.json"]
    ]
    for key in keys[:-2]:
        assert store.get_bytes(key).startswith(b"\x89PNG\r\n\x1a\n")
    back = pm.PostMortem.model_validate_json(store.get_bytes(keys[-1]))
    assert back == r and json.loads(store.get_bytes(keys[-1]))["metrics"]["serverErrors"] == 2
    assert store.get_bytes(keys[-2]).decode() == pm.render_markdown(r)
    assert pm.files(r) == pm.files(back)  # the same report gives the same bytes, charts included
