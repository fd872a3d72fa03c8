"""`llmops report usage` on a real run: the official openai client -> the gateway -> vLLM on the CPU,
both scraped by a real Prometheus with the labels the operator's monitors give them (the gateway's
ServiceMonitor, vLLM's PodMonitor); then the CLI reads that Prometheus, the ModelDeployment's
manifest and a registry, and reports what the run used.

The registry's versions are registered here with `llmops.registry.register` (a compressed version
comes from a compression run that needs its own environment: the lineage's `parent` is what that run
records)."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor

import yaml
from click.testing import CliRunner

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.cli import main
from llmops.operators.modeldeployment import monitoring
from llmops.operators.prometheus import Prometheus
from llmops.registry import GateVerdict, Lineage, register, versions
from llmops.storage import LocalStore
from tests.helpers import eventually
from tests.serving.gateway_calls import MODEL, single
from tests.serving.test_serving_feedback import MD, NAMESPACE, OURS, prometheus

VERSION = "1"
REQUESTS = 48


def _registry(tmp_path):
    """tiny:1 (the served version), tiny:2 compressed from it with its gates passed, tiny-pruned:1
    from it without gates (ungated: not recommended)."""
    root = tmp_path / "registry"
    root.mkdir()
    store = LocalStore(root)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"\0" * 64)
    passed = [GateVerdict(metric="perplexity_ratio", operator="<=", threshold=1.03, value=1.01, passed=True)]
    register(store, MODEL, weights, metrics={}, gates=passed, lineage=Lineage())
    register(
        store, MODEL, weights, metrics={}, gates=passed, lineage=Lineage(parent=f"{MODEL}:1", method="w8a8")
    )
    register(store, "tiny-pruned", weights, metrics={}, gates=[], lineage=Lineage(parent=f"{MODEL}:1"))
    assert versions(store, MODEL) == ["1", "2"]
    return root


def _manifest(tmp_path):
    path = tmp_path / "modeldeployment.yaml"
    body = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MD, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": MODEL, "version": VERSION},
            "registry": {"local": {"path": str(tmp_path / "registry")}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetQueueDepth": 2},
        },
    }
    other = {**body, "metadata": {"name": "other", "namespace": NAMESPACE}}  # never served: no series
    path.write_text(yaml.safe_dump_all([body, other]))
    return path


def test_the_usage_report_counts_what_the_run_used(vllm_server, gateway_factory, tmp_path):
    """The tokens the report counts are the tokens the client was told it used (the responses' usage
    field), from vLLM's own counters; the replica time is the window's steps with the one replica;
    GPU-hours 0 on the CPU with replica-hours beside it; the queue target's steps add up; the
    recommendation names the compressed version whose gates passed and not the ungated one; a
    deployment with no series and an unreachable Prometheus are one-line errors."""
    registry, manifest = _registry(tmp_path), _manifest(tmp_path)
    gw = gateway_factory(single(vllm_server.url))
    eventually(lambda: gw.value("llmops_gateway_ready_replicas", version=VERSION) == 1, timeout=60)
    client = gw.client()
    vllm_address = vllm_server.url.removeprefix("http://")
    with prometheus(tmp_path, f"127.0.0.1:{gw.port}", vllm=(vllm_address, VERSION)) as url:
        source = Prometheus(url)
        eventually(lambda: source.query(f"count(up{{{OURS}}} == 1)") == 2, timeout=60)
        eventually(lambda: source.query(f"sum(vllm:prompt_tokens_total{{{OURS}}})") is not None, timeout=60)
        # Scraped for a few seconds before the window opens: the report's first evaluation may fall up
        # to a step before `start`, and a counter first seen after it counts whole (born in the window,
        # llmops/operators/prometheus.py), which vLLM's counters were not: the server served earlier tests.
        eventually(
            lambda: (
                (source.query(f"min(count_over_time(vllm:prompt_tokens_total{{{OURS}}}[10s]))") or 0) >= 4
            ),
            timeout=60,
        )
        start = dt.datetime.now(dt.UTC)
        before = {
            kind: source.query(f"sum(vllm:{kind}_tokens_total{{{OURS}}})")
            for kind in ("prompt", "generation")
        }

        def ask(i: int):
            content = f"Count to {i}"
            return client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=64
            )

        with ThreadPoolExecutor(8) as pool:  # eight at a time: vLLM batches them, its gauges see them
            answers = list(pool.map(ask, range(REQUESTS)))
        prompt = sum(a.usage.prompt_tokens for a in answers)
        completion = sum(a.usage.completion_tokens for a in answers)
        expected = {"prompt": before["prompt"] + prompt, "generation": before["generation"] + completion}
        eventually(
            lambda: all(
                source.query(f"sum(vllm:{kind}_tokens_total{{{OURS}}})") == value
                for kind, value in expected.items()
            ),
            timeout=60,
        )
        eventually(
            lambda: source.query(f"sum(llmops_gateway_requests_total{{{OURS}}})") == REQUESTS, timeout=60
        )
        end = dt.datetime.now(dt.UTC)

        # The dashboard's usage row runs on the same series: every expression answers (the Grafana
        # range variable set to the window), the replica panel shows the one replica.
        spec = ModelDeploymentSpec.model_validate(next(yaml.safe_load_all(manifest.read_text()))["spec"])
        board = monitoring.dashboard(NAMESPACE, MD, spec)
        row = board["panels"][[p["title"] for p in board["panels"]].index("Usage and right-sizing") + 1 :]
        window_s = f"{max(1, round((dt.datetime.now(dt.UTC) - start).total_seconds()))}s"
        answers_of = {
            p["title"]: [source.query(t["expr"].replace("$__range", window_s)) for t in p["targets"]]
            for p in row
        }
        assert answers_of["Replicas and GPUs"] == [1]

        runner = CliRunner()
        window = ["--start", start.isoformat(), "--end", end.isoformat()]
        args = ["report", "usage", "--deployment", MD, "-n", NAMESPACE, "--prometheus", url, *window]
        args += ["--file", str(manifest), "--registry", str(registry)]
        result = runner.invoke(main, [*args, "--format", "json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        markdown = runner.invoke(main, [*args, "--out", str(tmp_path / "usage.md")])
        assert markdown.exit_code == 0, markdown.output

        missing = runner.invoke(main, [*args[:3], "other", *args[4:]])
        unreachable = runner.invoke(
            main, [*args[:7], "http://127.0.0.1:1", *args[8:]], catch_exceptions=False
        )

    print(
        f"\nusage: {len(answers)} requests, tokens prompt {prompt} completion {completion};"
        f" report {report['promptTokens']}/{report['generationTokens']} ({report['tokensSource']}),"
        f" replica-hours {report['replicaHours']:.6f} over {(end - start).total_seconds():.1f} s,"
        f" step {report['stepSeconds']} s, KV peak {report['kvCachePeak']}, p95 {report['latencyP95Ms']} ms,"
        f" tokens/replica-s {report['tokensPerReplicaSecond']:.2f},"
        f" busy {report['busyShare']}, running/replica {report['runningPerReplicaMean']},"
        f" queue {report['signals'][0]}, recommendation {report['recommendation']};"
        f" dashboard row {answers_of}"
    )
    assert report["promptTokens"] == prompt and report["generationTokens"] == completion
    assert report["tokensSource"] == "vllm" and report["versions"] == [VERSION]
    assert report["gpusPerReplica"] == 0 and report["gpuHours"] == 0 and report["tokensPerGpuSecond"] is None
    steps = round(report["replicaHours"] * 3600 / report["stepSeconds"])
    assert steps > 0 and report["replicasPeak"] == 1  # one replica in every step it was up
    assert report["tokensPerReplicaSecond"] == (prompt + completion) / (report["replicaHours"] * 3600)
    assert report["kvCachePeak"] is not None and 0 <= report["kvCachePeak"] <= 1
    assert report["latencyP95Ms"] is not None and report["latencyP95Ms"] > 0
    assert report["autoscaled"] is True and report["preemptions"] == 0
    (queue,) = report["signals"]
    assert queue["name"] == "queue" and queue["target"] == 2
    seconds = queue["secondsAbove"] + queue["secondsWithin"] + queue["secondsBelow"]
    assert seconds == steps * report["stepSeconds"]
    r = report["recommendation"]
    assert r["compressed"] == [f"{MODEL}:2"]
    assert 1 <= r["minReplicas"] <= r["maxReplicas"] and r["gpuMemoryUtilization"] is None
    assert any(n.startswith("replicas: ") for n in r["notes"])
    assert any("not applicable without GPUs" in n for n in r["notes"])
    assert any(n == f"a compressed version of this model passed its gates: {MODEL}:2" for n in r["notes"])
    text = (tmp_path / "usage.md").read_text()
    assert "0 GPU-hours (CPU;" in text and "replica-hours" in text and "## Recommendation" in text
    assert f"| Prompt tokens | {prompt} |" in text

    assert missing.exit_code == 1 and missing.output.count("\n") == 1, missing.output
    assert f"no series of ModelDeployment {NAMESPACE}/other" in missing.output
    assert unreachable.exit_code == 1 and unreachable.output.count("\n") == 1, unreachable.output
    assert "Prometheus at http://127.0.0.1:1 could not be reached" in unreachable.output
