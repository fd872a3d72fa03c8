"""bench/gateway_overhead.py's summary: the gateway/vllm-router ratio under load is the median of the
two proxies' req/s paired by round, not the ratio of their medians (which a shared machine's drift
between rounds moves)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # its own imports: procfs, arguments
    spec = importlib.util.spec_from_file_location("gateway_overhead", BENCH / "gateway_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rounds(*per_second: int) -> list[dict]:
    """One entry per round: `n` requests done in 1 s."""
    return [{"results": [None] * n, "wall": 1.0} for n in per_second]


def test_the_ratio_under_load_pairs_the_rounds(monkeypatch) -> None:
    bench = load_bench(monkeypatch)
    # Medians: gateway 200, router 150 (a ratio of medians of 1.33); by round 2.0, 0.5, 2.0.
    runs = {
        "plain": {
            "direct": rounds(500, 500, 500),
            "gateway": rounds(100, 200, 300),
            "vllm-router": rounds(50, 400, 150),
        }
    }
    out = bench.peer_summary({}, {}, runs, {}, concurrency=64)
    assert out["req_per_s_ratio_plain"] == 2.0
    assert out["req_per_s_ratio_rounds_plain"] == [0.5, 2.0, 2.0]
    assert out["req_per_s_median_plain"] == {"direct": 500, "gateway": 200, "vllm-router": 150}
    assert any("0.50-2.00, median 2.00; the gateway ahead in 2 of 3 rounds" in line for line in out["lines"])
