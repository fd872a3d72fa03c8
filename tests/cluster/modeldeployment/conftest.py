"""Fixtures of the ModelDeployment operator's tests on the real control plane: a local registry of
tiny versions, a real Prometheus, the kubeconfig in the environment.

In every test here kwok stands in for the kubelet, so pods become Running and Ready without
containers; the registry is a local directory with tiny registered versions (never served here).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llmops.dev.cluster import LocalCluster, free_port
from llmops.registry import GateVerdict, Lineage, register
from llmops.storage import LocalStore
from tests.cluster.modeldeployment.support import (
    PROMETHEUS,
    GatewayMetrics,
)
from tests.helpers import eventually, http_get


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A local registry with support-bot versions 1-3 (tiny files: nothing is served here)."""
    root = tmp_path / "registry"
    store = LocalStore(root)
    for i in range(1, 4):
        model = tmp_path / f"model-{i}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"version": i}))
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
        register(store, "support-bot", model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage())
    return root


@pytest.fixture
def prometheus(
    tmp_path: Path, namespace: str, request: pytest.FixtureRequest
) -> Iterator[tuple[str, GatewayMetrics]]:
    """A real Prometheus scraping the test's gateway-shaped exporter every second (or at the interval a
    test passes as the fixture's param), with the target labels the operator's ServiceMonitor would
    give it."""
    scrape = getattr(request, "param", "1s")
    exporter = GatewayMetrics()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": scrape, "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "gateway",
                        "static_configs": [
                            {
                                "targets": [f"127.0.0.1:{exporter.port}"],
                                "labels": {"namespace": namespace, "model_deployment": "bot"},
                            }
                        ],
                    }
                ],
            }
        )
    )
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: http_get(f"{url}/-/ready")[0] == 200, timeout=60)
        yield url, exporter
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)  # its TSDB is thrown away: no need to wait for a clean shutdown
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        exporter.close()


@pytest.fixture
def kubeconfig_env(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
