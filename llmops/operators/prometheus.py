"""Prometheus' HTTP API, as the operators read it: an instant query (one number) and a range query.

Used by the canary analysis (ModelDeployment), the metric triggers (RetrainPolicy), the post-mortem
of a retired version (ModelRetirement) and the usage report of a ModelDeployment. Pure reading, no
client library: the API is one GET per query (https://prometheus.io/docs/prometheus/latest/querying/api/).

Counters over a window (`Grid`, `counters`, `increments`), as the reports read them: one range query
per family with every series' own labels, each point the series' highest value over the last
LOOKBACK_SECONDS or the step if longer (`max_over_time(...[w])`): a counter only rises, so that is its
latest value, and a series that ended (a pod replaced) keeps its last value for one more step instead
of losing what it counted since the previous point. A counter's increase is the sum of its rises, a
fall being a restart (the new value counts whole), and a series first seen after the window's first
evaluation counts from 0, because it was born then (Prometheus' `increase()` extrapolates, and misses
what a series held at its first scrape). What is lost: what a restarted counter counted before it was
seen again, when it climbed back above its old value within one such window.

The step of a `Grid` is a whole number of seconds, at least 1, chosen so that no series has more than
`max_points` (MAX_POINTS) points; the first evaluation is moved back from `start` so that the last one
falls exactly on `end` (the window is widened by less than one step at its start).
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_POINTS = 500  # points per series of a report's range queries (Grid.over)
LOOKBACK_SECONDS = 300  # Prometheus' default lookback for instant vectors (--query.lookback-delta)


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with a result (a bad query, an overloaded server)."""


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels (with `__name__` when the query keeps it) and its
    samples as (unix seconds, value), oldest first, NaN samples left out."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


class Prometheus:
    """Instant and range queries against `url` (http://prometheus:9090)."""

    def __init__(self, url: str, timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, endpoint: str, params: dict[str, str], promql: str) -> dict[str, Any]:
        """The `data` of a successful answer from `/api/v1/<endpoint>`; the errors of `query`."""
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:  # 400 for a bad query, with its error in the body
            try:
                body = json.load(e)
            except ValueError:
                raise PrometheusError(f"Prometheus answered {e.code} to {promql!r}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus query failed: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str) -> float | None:
        """The value of the first sample `promql` returns at the current time; None when it returns
        no sample or NaN (a ratio over no traffic). Raises PrometheusError when Prometheus refuses the
        query and OSError (urllib.error.URLError) when it cannot be reached."""
        data = self._get("query", {"query": promql}, promql)
        result = data["result"]
        if not result:
            return None
        value = float(result[0]["value"][1] if data.get("resultType") != "scalar" else result[1])
        return None if math.isnan(value) else value

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float) -> list[Series]:
        """`promql` evaluated at start, start + step, ... up to end (`/api/v1/query_range`): one
        Series per label set, in Prometheus' order. `start` and `end` must carry a time zone (naive
        datetimes are refused with ValueError, as they name no instant); `step_seconds` > 0. Each
        evaluation sees the latest sample within Prometheus' lookback (5 minutes by default), so a
        step longer than the scrape interval samples a counter, it does not lose its increments.
        Prometheus refuses more than 11,000 points per series. Errors as `query`."""
        for field, when in (("start", start), ("end", end)):
            if when.tzinfo is None:
                raise ValueError(f"query_range: {field} must carry a time zone (UTC), got {when!r}")
        if not step_seconds > 0:
            raise ValueError(f"query_range: step_seconds must be above 0, got {step_seconds!r}")
        params = {
            "query": promql,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step_seconds:g}",
        }
        data = self._get("query_range", params, promql)
        return [
            Series(
                dict(s.get("metric", {})),
                [(float(t), float(v)) for t, v in s.get("values", []) if not math.isnan(float(v))],
            )
            for s in data["result"]
        ]


@dataclass(frozen=True)
class Grid:
    """The evaluation times: first + i * step for i in range(n); the last is the window's end."""

    first: float  # unix seconds
    step: int
    n: int

    @classmethod
    def over(cls, start: datetime, end: datetime, max_points: int = MAX_POINTS) -> Grid:
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        span = max((end - start).total_seconds(), 0.0)
        step = max(1, math.ceil(span / (max_points - 1)))
        steps = math.ceil(span / step)
        last = end.timestamp()
        return cls(last - steps * step, step, steps + 1)

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.first, UTC)

    @property
    def end(self) -> datetime:
        return self.time(self.n - 1)

    def time(self, i: int) -> datetime:
        return datetime.fromtimestamp(self.first + i * self.step, UTC)

    def index(self, t: float) -> int | None:
        i = round((t - self.first) / self.step)
        return i if 0 <= i < self.n else None


def increments(series: Series, grid: Grid) -> list[float]:
    """A counter series' rise in each step of `grid` (a fall is a restart, a series first seen after
    the grid's first time counts from 0: the module docstring)."""
    out = [0.0] * grid.n
    previous: float | None = None
    for t, value in series.points:
        i = grid.index(t)
        if i is None:
            continue
        if previous is None:
            rise = 0.0 if i == 0 else value
        else:
            rise = value - previous if value >= previous else value
        out[i] += rise
        previous = value
    return out


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' `histogram_quantile(q, ...)` over cumulative bucket counts [(le, count)] (any
    order; +Inf among them); None when there are fewer than two buckets or no observations."""
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]) or ordered[-1][1] <= 0:
        return None
    counts = [c for _, c in ordered]
    for i in range(1, len(counts)):  # Prometheus' fix for counts a scrape left non-monotonic
        counts[i] = max(counts[i], counts[i - 1])
    rank = q * counts[-1]
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if i == len(ordered) - 1:
        return ordered[-2][0]
    upper = ordered[i][0]
    if i == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if i == 0 else (ordered[i - 1][0], counts[i - 1])
    inside = counts[i] - below
    return upper if inside <= 0 else lower + (upper - lower) * (rank - below) / inside


def counters(prometheus: Prometheus, promql: str, grid: Grid) -> list[Series]:
    """The counter series `promql` selects over `grid`, one point per step: each series' highest value
    over max(step, LOOKBACK_SECONDS) (the module docstring says why); `increments` turns each into its
    rises. Errors as `Prometheus.query`."""
    window = f"[{max(grid.step, LOOKBACK_SECONDS)}s]"
    return prometheus.query_range(f"max_over_time({promql}{window})", grid.start, grid.end, grid.step)
