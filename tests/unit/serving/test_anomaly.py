"""Anomaly detection on latency and error rate (serving.anomaly)."""

from __future__ import annotations

import random

from llmops.serving.anomaly import AnomalyMonitor, Ewma, RobustZ


def test_robust_z_flags_a_spike_not_noise():
    rng = random.Random(1)
    z = RobustZ(history=60)
    flags = [z.update(0.2 + rng.gauss(0, 0.01)).anomalous for _ in range(200)]
    assert sum(flags) <= 2  # noise: essentially never
    spike = z.update(0.5)
    assert spike.anomalous and spike.score > 10


def test_robust_z_flat_history_uses_floor():
    z = RobustZ(history=20, abs_floor=0.01, rel_floor=0)
    for _ in range(20):
        z.update(0.0)
    assert not z.update(0.02).anomalous  # 2 points of error rate: within noise
    assert z.update(0.2).anomalous


def test_ewma_band():
    e = Ewma(alpha=0.1, k=4)
    rng = random.Random(2)
    assert not any(e.update(1 + rng.gauss(0, 0.05)).anomalous for _ in range(100))
    assert e.update(3).anomalous


def test_anomaly_monitor_windows():
    m = AnomalyMonitor(history=30)
    rng = random.Random(3)
    for _ in range(20):
        for _ in range(50):
            m.observe(0.1 + rng.gauss(0, 0.005), error=rng.random() < 0.01)
        verdicts = m.tick()
        assert not verdicts["latency"].anomalous
    for _ in range(50):
        m.observe(1.0, error=True)
    verdicts = m.tick()
    assert verdicts["latency"].anomalous and verdicts["error_rate"].anomalous
    assert m.tick() == verdicts  # an empty window keeps the last verdict
