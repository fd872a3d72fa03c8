"""Prometheus' HTTP API, as the operators read it: an instant query (one number) and a range query.

Used by the canary analysis (ModelDeployment), the metric triggers (RetrainPolicy) and the
post-mortem of a retired version (ModelRetirement). Pure reading, no client library: the API is one
GET per query (https://prometheus.io/docs/prometheus/latest/querying/api/).
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
