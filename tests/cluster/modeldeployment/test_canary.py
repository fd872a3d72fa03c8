"""The canary on the real control plane: steps, promotion and rollback from real Prometheus samples,
and the capacity invariant at every observed step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.dev.cluster import LocalCluster
from llmops.operators.modeldeployment.canary import PrometheusSource
from llmops.operators.modeldeployment.plan import ServingSettings
from tests.cluster.modeldeployment.support import (
    GatewayMetrics,
    Recorder,
    apply,
    capacity_violations,
    condition,
    deployment,
    events,
    gateway_weights,
    get,
    names,
    running_operator,
)
from tests.helpers import LOCAL_REGISTRY_POD_SECURITY, eventually

pytestmark = [pytest.mark.usefixtures("llmops_crds"), LOCAL_REGISTRY_POD_SECURITY]


@pytest.mark.usefixtures("kubeconfig_env")
def test_canary_steps_promotes_then_rolls_back_a_bad_version(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    url, traffic = prometheus
    traffic.set("1", error_ratio=0.0, latency=0.3)
    traffic.set("2", error_ratio=0.0, latency=0.3)
    analysis = {"intervalSeconds": 10, "maxErrorRate": 0.05, "maxLatencyRatio": 2.0}
    canary = {
        "model": {"name": "support-bot", "version": "2"},
        "weight": 20,
        "steps": [60],
        "analysis": analysis,
    }
    body = deployment("bot", registry, rollout={"canary": canary}, gateway={"replicas": 1})
    settings = ServingSettings(prometheus_url=url, resync_seconds=600, scrape_interval="1s")
    with running_operator(namespace, settings, PrometheusSource(url)):
        apply(cluster, namespace, body)

        def weights() -> dict[str, int]:
            return gateway_weights(cluster, namespace)

        # Both versions are up; the canary takes its first weight once ready, then the next step.
        eventually(lambda: weights() == {"1": 80, "2": 20}, timeout=90)
        md = get(cluster, "md", "bot", namespace)
        assert md is not None and md["status"]["canary"]["verdict"] == "Analysing"
        assert condition(md, "Ready")["reason"] == "CanaryAnalysing"
        eventually(lambda: weights() == {"1": 40, "2": 60}, timeout=60)
        progressed = [e for e in events(cluster, namespace, "bot") if e["reason"] == "CanaryProgressed"]
        assert progressed and "weight 20% -> 60%" in progressed[0]["message"]

        # The last step passes: promoted. Version 2 serves alone; version 1's children are deleted.
        md = eventually(
            lambda: (
                (o := get(cluster, "md", "bot", namespace))["status"].get("canary", {}).get("verdict")
                == "Promoted"
                and o
            ),
            timeout=60,
        )
        assert [(v["version"], v["role"], v["weight"]) for v in md["status"]["versions"]] == [
            ("2", "stable", 100)
        ]
        assert condition(md, "Ready")["reason"] == "Promoted"
        assert any(e["reason"] == "Promoted" for e in events(cluster, namespace, "bot"))
        eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
        assert weights() == {"2": 100}
        # Where and when each version served, as Events (and audit records, operators/auditing.py).
        served = {
            ("RolledOut", "support-bot:1"),
            ("RolledOut", "support-bot:2"),
            ("ServingStopped", "support-bot:1"),
        }
        eventually(
            lambda: (
                served <= {(e["reason"], e["message"].split()[0]) for e in events(cluster, namespace, "bot")}
            )
        )

        # The user records the promotion and starts the next canary, version 3, which fails.
        traffic.set("3", error_ratio=0.5, latency=0.3)
        body["spec"]["model"] = {"name": "support-bot", "version": "2"}
        body["spec"]["rollout"]["canary"]["model"] = {"name": "support-bot", "version": "3"}
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Stalled", "--timeout=120s")
        md = get(cluster, "md", "bot", namespace)
        assert md["status"]["canary"]["verdict"] == "RolledBack" and md["status"]["canary"]["weight"] == 0  # type: ignore[index]
        assert md["status"]["canary"]["errorRate"] > 0.05 and md["status"]["phase"] == "Degraded"  # type: ignore[index]
        stalled = condition(md, "Stalled")
        assert stalled["reason"] == "RolledBack" and "error rate" in stalled["message"]
        rolled = [e for e in events(cluster, namespace, "bot") if e["reason"] == "RolledBack"]
        assert rolled and rolled[0]["type"] == "Warning" and "error rate" in rolled[0]["message"]
        assert "Version 2 serves all traffic" in rolled[0]["message"]
        eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
        assert weights() == {"2": 100}


# -- what the apiserver saw, in its order --------------------------------------------------------


@pytest.mark.usefixtures("kubeconfig_env")
def test_canary_promotion_and_rollback_never_drop_below_the_stable_replicas(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    """minReplicas 3, no autoscaler: a canary through 20%, 50% and 100%, its promotion, then a canary
    that is rolled back. At every moment the apiserver recorded, the replicas ready in the versions
    that take traffic are at least 3; the new stable version is ready before the old one goes."""
    url, traffic = prometheus
    for version in ("1", "2"):
        traffic.set(version, error_ratio=0.0, latency=0.3)
    canary = {
        "model": {"name": "support-bot", "version": "2"},
        "weight": 20,
        "steps": [50, 100],
        "analysis": {"intervalSeconds": 10, "maxErrorRate": 0.05},
    }
    body = deployment(
        "bot",
        registry,
        autoscaling={"minReplicas": 3, "maxReplicas": 3},
        rollout={"canary": canary},
        gateway={"replicas": 1},
    )
    settings = ServingSettings(prometheus_url=url, resync_seconds=600, scrape_interval="1s")
    recorder = Recorder(cluster.kubeconfig, namespace, "Deployment", "ConfigMap")
    try:
        with running_operator(namespace, settings, PrometheusSource(url)):
            apply(cluster, namespace, body)
            eventually(
                lambda: (
                    (get(cluster, "md", "bot", namespace) or {})
                    .get("status", {})
                    .get("canary", {})
                    .get("verdict")
                    == "Promoted"
                ),
                timeout=240,
            )
            eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
            promoted = get(cluster, "deployment", "bot-2-vllm", namespace)
            assert promoted["spec"]["replicas"] == 3  # type: ignore[index]
            assert gateway_weights(cluster, namespace) == {"2": 100}

            # The next canary fails and is rolled back: the stable version keeps its three replicas.
            traffic.set("3", error_ratio=0.5, latency=0.3)
            body["spec"]["model"] = {"name": "support-bot", "version": "2"}
            body["spec"]["rollout"]["canary"]["model"] = {"name": "support-bot", "version": "3"}
            apply(cluster, namespace, body)
            cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Stalled", "--timeout=180s")
            eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
            assert gateway_weights(cluster, namespace) == {"2": 100}
    finally:
        events = recorder.stop()
    bad, checked = capacity_violations(events, need=3)
    assert checked > 10 and not bad, f"fewer than 3 ready replicas took traffic at {bad[:5]}"
    # The canary took all the traffic at the 100% step only with three ready replicas of its own.
    assert any(
        kind == "ConfigMap"
        and o["metadata"]["name"] == "bot-gateway"
        and {u["weight"] for u in json.loads(o["data"]["config.json"])["upstreams"]} == {0, 100}
        for _, _, kind, o in events
    )


@pytest.mark.usefixtures("kubeconfig_env")
@pytest.mark.parametrize("prometheus", ["10s"], indirect=True)
def test_a_canary_window_shorter_than_the_scrape_interval_still_reaches_a_verdict(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    """intervalSeconds 10 (the API's least) with monitors that scrape every 10 s: a 10 s window holds
    one sample, never a rate. The operator analyses over four scrape intervals instead, and the canary
    is promoted; a canary that gets no traffic says so in its Ready condition."""
    url, traffic = prometheus
    traffic.set("1", error_ratio=0.0, latency=0.3)
    traffic.set("2", error_ratio=0.0, latency=0.3)
    canary = {
        "model": {"name": "support-bot", "version": "2"},
        "weight": 50,
        "analysis": {"intervalSeconds": 10, "maxErrorRate": 0.05},
    }
    body = deployment("bot", registry, rollout={"canary": canary}, gateway={"replicas": 1})
    settings = ServingSettings(prometheus_url=url, resync_seconds=600, scrape_interval="10s")
    with running_operator(namespace, settings, PrometheusSource(url)):
        apply(cluster, namespace, body)
        md = eventually(
            lambda: (
                (o := get(cluster, "md", "bot", namespace) or {})
                .get("status", {})
                .get("canary", {})
                .get("verdict")
                == "Promoted"
                and o
            ),
            timeout=240,
        )
        assert md["status"]["canary"]["windowSeconds"] == 40

        # Version 3 gets no traffic at all: every window is inconclusive, and Ready says why.
        body["spec"]["model"] = {"name": "support-bot", "version": "2"}
        body["spec"]["rollout"]["canary"]["model"] = {"name": "support-bot", "version": "3"}
        apply(cluster, namespace, body)
        ready = eventually(
            lambda: (
                (c := condition(get(cluster, "md", "bot", namespace), "Ready"))["reason"]
                == "AnalysisInconclusive"
                and c
            ),
            timeout=300,
        )
        assert ready["status"] == "True" and "no requests reached the canary" in ready["message"]
