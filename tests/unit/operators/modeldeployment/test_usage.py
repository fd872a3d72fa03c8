"""The usage report's fold and rules (llmops/operators/modeldeployment/usage.py) on hand-made series for
the edge cases: no data, counter resets, series born in the window, gaps, GPUs, the targets' tolerance,
the recommendation's rules, the registry's compressed versions. tests/serving/test_serving_usage.py
runs it on a real run's Prometheus."""

from __future__ import annotations

import datetime as dt

import pytest

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.modeldeployment import usage
from llmops.operators.prometheus import Grid, Prometheus, Series
from llmops.registry import GateVerdict, Lineage, register
from llmops.storage import LocalStore

STEP = 10
GRID = Grid(first=1_000_000.0, step=STEP, n=7)  # 60 s, 7 evaluations


def spec(**overrides) -> ModelDeploymentSpec:
    body = {"model": {"name": "bot", "version": "1"}, "registry": {"local": {"path": "/r"}}, **overrides}
    return ModelDeploymentSpec.model_validate(body)


def series(values, **labels) -> Series:
    """One point per step; None leaves the step out (a gap)."""
    return Series(dict(labels), [(GRID.first + i * STEP, v) for i, v in enumerate(values) if v is not None])


def facts(**given) -> usage.Facts:
    fields = {f: [] for f in usage.Facts.__dataclass_fields__ if f != "grid"}
    return usage.Facts(grid=GRID, **{**fields, **given})


def fold(s: ModelDeploymentSpec, f: usage.Facts, compressed=()) -> usage.Usage:
    return usage.fold(s, f, namespace="demo", name="bot", source="http://prom", compressed=compressed)


def test_no_series_is_one_line_naming_the_deployment():
    with pytest.raises(usage.UsageError, match=r"^no series of ModelDeployment demo/bot in Prometheus"):
        fold(spec(), facts())
    with pytest.raises(usage.UsageError):  # series without a point in the window are no data either
        fold(spec(), facts(replicas=[Series({"version": "1"}, [])]))


def test_replica_time_counts_the_steps_with_replicas_and_gaps_count_nothing():
    f = facts(
        replicas=[series([1, 1, None, None, 2, 2, 1], version="1"), series([None] * 5 + [1, 1], version="2")],
    )
    r = fold(spec(), f)
    print(f"\nreplica-hours {r.replica_hours:.6f}, mean {r.replicas_mean:.3f}, peak {r.replicas_peak}")
    assert r.replica_hours * 3600 == (1 + 1 + 2 + 3 + 2) * STEP
    assert r.gpu_hours == 0 and r.tokens_per_gpu_second is None and r.versions == ["1", "2"]
    assert r.replicas_peak == 3 and r.tokens_source == "none" and r.tokens_per_replica_second == 0
    assert "0 GPU-hours (CPU; 0.025 replica-hours)" in usage.summary(r)


def test_tokens_sum_the_rises_through_a_restart_and_from_a_series_born_in_the_window():
    f = facts(
        replicas=[series([1] * 7, version="1")],
        # 100 at the window's start (not counted), +20, +30, restart to 5 (counted whole), +10
        prompt_tokens=[series([100, 120, 150, 5, 15, 15, 15], pod="a")],
        # a second pod born at step 3 with 40 already: counted from 0
        generation_tokens=[series([None, None, None, 40, 60, 60, 60], pod="b")],
        gateway_prompt_tokens=[series([0, 999, 999, 999, 999, 999, 999])],  # not read: vLLM's are there
    )
    r = fold(spec(resources={"gpus": 2}), f)
    assert (r.prompt_tokens, r.generation_tokens, r.tokens_source) == (20 + 30 + 5 + 10, 60, "vllm")
    assert r.gpu_hours == 7 * STEP * 2 / 3600
    assert r.tokens_per_gpu_second == 125 / (7 * STEP * 2)
    assert r.tokens_per_replica_second == 125 / (7 * STEP)


def test_the_gateways_tokens_when_vllm_is_not_scraped():
    f = facts(
        replicas=[series([1] * 7, version="1")],
        gateway_prompt_tokens=[series([0, 3, 6, 6, 6, 6, 6], version="1")],
        gateway_completion_tokens=[series([0, 1, 2, 2, 2, 2, 2], version="1")],
    )
    r = fold(spec(), f)
    assert (r.prompt_tokens, r.generation_tokens, r.tokens_source) == (6, 2, "gateway")


def test_time_against_the_targets_uses_the_hpas_tolerance_and_sets_the_replica_bounds():
    s = spec(autoscaling={"minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 4})
    f = facts(
        replicas=[series([2, 2, 2, 2, 4, 4, 1], version="1")],
        # per replica 0, 3.7 (within 10%), 4.4 (within), 5 (above), 4 (within), 20/4 = 5 (above), 0 (below)
        waiting=[series([0, 7.4, 8.8, 10, 16, 20, 0])],
        running=[series([0, 2, 2, 2, 4, 4, 0])],
        kv_cache=[series([0.1, 0.2, 0.3, 0.4, 0.45, 0.3, 0.0], pod="a")],
    )
    r = fold(s, f)
    (queue,) = r.signals
    print(f"\nqueue {queue}; recommendation {r.recommendation}")
    assert (queue.seconds_above, queue.seconds_within, queue.seconds_below) == (2 * STEP, 3 * STEP, 2 * STEP)
    assert queue.peak_per_replica == 5 and queue.share_above == pytest.approx(2 / 7)
    assert r.seconds_at_max == 2 * STEP and r.seconds_at_min == STEP
    # needed per step: 0, ceil(1.85)=2, ceil(2.2)=3, ceil(2.5)=3, 4, 5, 0 -> p95 5 (nearest rank), p5 0 -> 1
    r2 = r.recommendation
    assert (r2.needed_p95, r2.needed_peak, r2.min_replicas, r2.max_replicas) == (5, 5, 1, 5)
    assert r.busy_share == pytest.approx(5 / 7) and r.kv_cache_peak == 0.45


def test_the_kv_cache_signal_divides_the_pods_sum_by_the_replicas():
    s = spec(autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetKvCacheUsage": 0.5})
    f = facts(
        replicas=[series([2] * 7, version="1")],
        kv_cache=[series([0.9] * 7, pod="a"), series([0.5] * 7, pod="b")],
        running=[series([1] * 7)],
    )
    r = fold(s, f)
    (kv,) = r.signals
    assert kv.name == "kvCache" and kv.mean_per_replica == pytest.approx(0.7) and kv.share_above == 1
    assert r.kv_cache_mean == pytest.approx(0.7) and r.kv_cache_peak == 0.9
    assert r.recommendation.max_replicas == 3  # ceil(1.4 / 0.5)


def test_scale_to_zero_keeps_min_zero():
    s = spec(autoscaling={"minReplicas": 0, "maxReplicas": 2, "scaleToZero": True})
    r = fold(
        s,
        facts(replicas=[series([0, 0, 1, 1, 0, 0, 0], version="1")], running=[series([0, 0, 1, 1, 0, 0, 0])]),
    )
    assert (r.recommendation.min_replicas, r.recommendation.max_replicas) == (0, 1)
    assert r.replica_hours * 3600 == 2 * STEP


@pytest.mark.parametrize(
    ("gmu", "kv", "preempted", "expected", "note"),
    [
        (0.9, [0.95], 0, 0.95, "KV cache peaked at 95%: raise it from 0.9 to 0.95"),
        (0.9, [0.3], 4, 0.95, "vLLM preempted 4 requests"),
        (0.95, [0.99], 0, None, "at 0.95 already: add replicas"),
        (0.9, [0.2], 0, None, "never held more than 20%"),
        (0.9, [0.7], 0, None, "gpuMemoryUtilization: keep 0.9"),
    ],
)
def test_gpu_memory_utilization_rules(gmu, kv, preempted, expected, note):
    s = spec(resources={"gpus": 1}, engine={"gpuMemoryUtilization": gmu})
    f = facts(
        replicas=[series([1] * 7, version="1")],
        kv_cache=[series(kv * 7, pod="a")],
        running=[series([1] * 7)],
        preemptions=[series([0] * 6 + [preempted], pod="a")],
    )
    r = fold(s, f)
    assert r.recommendation.gpu_memory_utilization == expected and r.preemptions == preempted
    assert any(note in n for n in r.recommendation.notes), r.recommendation.notes


def test_concurrency_against_max_num_seqs_only_when_set():
    assert usage.max_num_seqs(spec(engine={"extraArgs": ["--max-num-seqs", "8"]})) == 8
    assert usage.max_num_seqs(spec(engine={"extraArgs": ["--enforce-eager", "--max-num-seqs=16"]})) == 16
    assert usage.max_num_seqs(spec()) is None
    f = facts(replicas=[series([2] * 7, version="1")], running=[series([4] * 7)])
    r = fold(spec(engine={"extraArgs": ["--max-num-seqs", "8"]}), f)
    assert r.running_per_replica_mean == 2 and r.concurrency_utilisation == 0.25
    assert fold(spec(), f).concurrency_utilisation is None


def test_latency_p95_from_the_buckets_increase():
    buckets = [
        series([0, 10, 10, 10, 10, 10, 10], le="0.1"),
        series([0, 19, 19, 19, 19, 19, 19], le="0.5"),
        series([0, 20, 20, 20, 20, 20, 20], le="+Inf"),
    ]
    r = fold(spec(), facts(replicas=[series([1] * 7, version="1")], latency_buckets=buckets))
    assert r.latency_p95_ms == 500.0  # rank 19 of 20 falls at the top of the 0.1-0.5 bucket


def test_compressed_versions_need_the_parent_and_passed_gates(tmp_path):
    store = LocalStore(tmp_path)
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"x")
    passed = [GateVerdict(metric="ppl_ratio", operator="<=", threshold=1.03, value=1.0, passed=True)]
    register(store, "bot", weights, metrics={}, gates=passed, lineage=Lineage())  # bot:1, served
    register(store, "bot", weights, metrics={}, gates=passed, lineage=Lineage(parent="bot:1"))  # bot:2
    register(store, "bot-int8", weights, metrics={}, gates=passed, lineage=Lineage(parent="bot:1"))
    register(store, "bot-int4", weights, metrics={}, gates=[], lineage=Lineage(parent="bot:1"))  # ungated
    register(store, "other", weights, metrics={}, gates=passed, lineage=Lineage(parent="bot:9"))
    found = usage.compressed_versions(store, spec(), ["1"])
    assert found == ["bot:2", "bot-int8:1"]  # by model name, then version
    assert usage.compressed_versions(store, spec(), ["3"]) == []
    r = fold(spec(), facts(replicas=[series([1] * 7, version="1")]), compressed=found)
    assert r.recommendation.compressed == found
    assert "a compressed version of this model passed its gates: bot:2, bot-int8:1" in r.recommendation.notes


def test_parent_of_reads_a_declared_field_or_an_extra_key():
    class Declared:
        class lineage:  # the shape of a manifest whose Lineage declares `parent`
            parent = "bot:1"

    assert usage.parent_of(Declared()) == "bot:1"
    assert (
        usage.parent_of(type("M", (), {"lineage": Lineage.model_validate({"parent": "bot:2"})})()) == "bot:2"
    )
    assert usage.parent_of(type("M", (), {"lineage": Lineage()})()) is None


def test_reading_errors_are_one_line():
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(usage.UsageError, match=r"^Prometheus at http://127.0.0.1:1 could not be reached"):
        usage.collect(
            Prometheus("http://127.0.0.1:1", timeout=2),
            spec(),
            namespace="demo",
            name="bot",
            start=start,
            end=start + dt.timedelta(hours=1),
        )
    with pytest.raises(ValueError, match="namespace: 'Demo'"):
        usage.selector("Demo", "bot")
    with pytest.raises(ValueError, match="deployment: 'bot\"}'"):
        usage.selector("demo", 'bot"}')
    with pytest.raises(ValueError, match="is not after start"):
        usage.collect(Prometheus("http://x"), spec(), namespace="demo", name="bot", start=start, end=start)


def test_the_markdown_says_replica_hours_on_the_cpu_and_gpu_hours_on_gpus():
    f = facts(replicas=[series([1] * 7, version="1")], prompt_tokens=[series([0, 10, 20, 30, 40, 50, 60])])
    cpu = usage.render_markdown(fold(spec(), f))
    gpu_report = fold(spec(resources={"gpus": 4}), f, compressed=["bot-w8a8:1"])
    gpu = usage.render_markdown(gpu_report)
    print("\n" + gpu)
    assert "> demo/bot: 0 GPU-hours (CPU; 0.0194 replica-hours), 60 tokens" in cpu
    assert "| Tokens per GPU-second | n/a (no GPUs) |" in cpu and "| Latency p95 (gateway) | n/a |" in cpu
    assert "| GPU-hours | 0.07778 (4 per replica) |" in gpu and "| Tokens per GPU-second | 0.2143 |" in gpu
    assert "| Compressed versions that passed their gates | bot-w8a8:1 |" in gpu
    assert usage.Usage.model_validate_json(gpu_report.model_dump_json(by_alias=True)) == gpu_report
