"""`llmops report usage` reading the ModelDeployment from the real API server (the kubeconfig), not
from a manifest: its GPUs per replica turn replica-hours into GPU-hours. No operator runs and kwok has
no pods here, so the replicas come from the gateway-shaped exporter (support.GatewayMetrics) a real
Prometheus scrapes; tests/serving/test_serving_usage.py runs the report on a real vLLM and gateway."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmops.cli import main
from llmops.dev.cluster import LocalCluster
from llmops.operators.prometheus import Prometheus
from tests.cluster.modeldeployment.support import GatewayMetrics, apply, deployment
from tests.helpers import eventually

pytestmark = [pytest.mark.usefixtures("llmops_crds", "kubeconfig_env")]


def test_the_usage_report_reads_the_deployment_from_the_cluster(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    url, exporter = prometheus
    apply(cluster, namespace, deployment("bot", registry, resources={"gpus": 2}))
    exporter.ready.labels("1").set(3)
    source = Prometheus(url)
    sel = f'{{namespace="{namespace}",model_deployment="bot"}}'
    eventually(lambda: source.query(f"sum(llmops_gateway_ready_replicas{sel})") == 3, timeout=60)
    start = dt.datetime.now(dt.UTC)
    eventually(lambda: dt.datetime.now(dt.UTC) - start > dt.timedelta(seconds=3), timeout=10, interval=0.5)
    end = dt.datetime.now(dt.UTC)
    window = ["--start", start.isoformat(), "--end", end.isoformat()]
    base = ["report", "usage", "-n", namespace, "--prometheus", url, *window, "--format", "json"]

    result = CliRunner().invoke(main, [*base, "--deployment", "bot"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    print(f"\nfrom the cluster: gpus {report['gpusPerReplica']}, replica-hours {report['replicaHours']:.6f},"
          f" GPU-hours {report['gpuHours']:.6f}, replicas peak {report['replicasPeak']}")  # fmt: skip
    assert report["gpusPerReplica"] == 2 and report["replicasPeak"] == 3 and report["versions"] == ["1"]
    assert report["replicaHours"] > 0 and report["gpuHours"] == pytest.approx(2 * report["replicaHours"])
    assert report["recommendation"]["gpuMemoryUtilization"] is None  # no KV-cache series: keep it
    assert report["tokensSource"] == "none" and report["tokensPerGpuSecond"] == 0

    absent = CliRunner().invoke(main, [*base, "--deployment", "nobody"])
    assert absent.exit_code == 1 and absent.output.count("\n") == 1, absent.output
    assert f"ModelDeployment {namespace}/nobody: the API server answered 404" in absent.output
