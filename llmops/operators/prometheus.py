"""Prometheus' HTTP API, as the operators read it: one instant query, one number.

Used by the canary analysis (ModelDeployment) and the metric triggers (RetrainPolicy). Pure reading,
no client library: the API is one GET (https://prometheus.io/docs/prometheus/latest/querying/api/).
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with a result (a bad query, an overloaded server)."""


class Prometheus:
    """Instant queries against `url` (http://prometheus:9090)."""

    def __init__(self, url: str, timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> float | None:
        """The value of the first sample `promql` returns at the current time; None when it returns
        no sample or NaN (a ratio over no traffic). Raises PrometheusError when Prometheus refuses the
        query and OSError (urllib.error.URLError) when it cannot be reached."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
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
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1] if body["data"].get("resultType") != "scalar" else result[1])
        return None if math.isnan(value) else value
