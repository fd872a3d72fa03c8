"""Anomalies in latency and error rate: a robust z-score over recent windows, and an EWMA band.

Pure and cheap; the gateway feeds it once per window (`anomalyWindowSeconds`) and exports
`llmops_gateway_anomaly_score{signal}` and `llmops_gateway_anomaly{signal}` (1 while anomalous).

Robust z-score (Iglewicz and Hoaglin's modified z): z = 0.6745 * (x - median) / MAD over the last
`history` windows. Median and MAD ignore the outliers they are meant to find, unlike mean and standard
deviation, so one spike does not hide the next. A flat history (MAD 0) falls back to the mean absolute
deviation, and the spread never drops below a floor, so a steady service does not alarm on noise.
|z| > 3.5 is the textbook threshold.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    value: float
    score: float
    anomalous: bool


class RobustZ:
    def __init__(
        self,
        history: int = 60,
        threshold: float = 3.5,
        min_history: int = 8,
        rel_floor: float = 0.05,
        abs_floor: float = 0.0,
    ) -> None:
        self.values: deque[float] = deque(maxlen=history)
        self.threshold, self.min_history = threshold, min_history
        self.rel_floor, self.abs_floor = rel_floor, abs_floor

    def score(self, x: float) -> float:
        if len(self.values) < self.min_history:
            return 0.0
        med = statistics.median(self.values)
        mad = statistics.median(abs(v - med) for v in self.values)
        # MAD / 0.6745 estimates the standard deviation; with MAD 0 (a mostly flat history) fall back
        # to the mean absolute deviation, and never below the floors, so noise on a steady service
        # does not alarm.
        spread = mad / 0.6745 if mad > 0 else 1.2533 * statistics.fmean(abs(v - med) for v in self.values)
        scale = max(spread, self.rel_floor * abs(med), self.abs_floor, 1e-12)
        return (x - med) / scale

    def update(self, x: float) -> Verdict:
        """Judge `x` against the history, then add it (anomalies too: a lasting shift becomes normal)."""
        z = self.score(x)
        self.values.append(x)
        return Verdict(x, z, abs(z) > self.threshold)


class Ewma:
    """Exponentially weighted mean and variance; anomalous outside mean ± k·sd."""

    def __init__(self, alpha: float = 0.1, k: float = 4.0, warmup: int = 8) -> None:
        self.alpha, self.k, self.warmup = alpha, k, warmup
        self.mean = 0.0
        self.var = 0.0
        self.n = 0

    def update(self, x: float) -> Verdict:
        if self.n == 0:
            self.mean, self.n = x, 1
            return Verdict(x, 0.0, False)
        sd = math.sqrt(self.var)
        score = (x - self.mean) / sd if sd > 0 else 0.0
        anomalous = self.n >= self.warmup and abs(score) > self.k
        diff = x - self.mean
        incr = self.alpha * diff
        self.mean += incr
        self.var = (1 - self.alpha) * (self.var + diff * incr)
        self.n += 1
        return Verdict(x, score, anomalous)


class WindowStats:
    """Collects one window of requests: latencies and outcomes."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0

    def add(self, latency: float, error: bool) -> None:
        self.latencies.append(latency)
        self.errors += error

    def close(self) -> tuple[float | None, float | None]:
        """(p50 latency, error rate) of the window, None when it saw no requests; starts a new window."""
        if not self.latencies:
            return None, None
        p50 = statistics.median(self.latencies)
        rate = self.errors / len(self.latencies)
        self.latencies, self.errors = [], 0
        return p50, rate


class AnomalyMonitor:
    """Latency (p50 per window) and error rate (per window), each judged by a robust z-score."""

    SIGNALS = ("latency", "error_rate")

    def __init__(self, history: int = 60, threshold: float = 3.5) -> None:
        self.window = WindowStats()
        self.detectors = {
            # Latency: at least 5% of the median or 5 ms; error rate: at least one percentage point.
            "latency": RobustZ(history, threshold, abs_floor=0.005),
            "error_rate": RobustZ(history, threshold, rel_floor=0.0, abs_floor=0.01),
        }
        self.last: dict[str, Verdict] = {}

    def observe(self, latency: float, error: bool) -> None:
        self.window.add(latency, error)

    def tick(self) -> dict[str, Verdict]:
        p50, rate = self.window.close()
        if p50 is not None and rate is not None:
            self.last = {
                "latency": self.detectors["latency"].update(p50),
                "error_rate": self.detectors["error_rate"].update(rate),
            }
        return self.last
