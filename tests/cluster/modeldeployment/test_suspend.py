"""spec.suspend on the real control plane (kwok stands in for the kubelet): the gateway is told at once,
and once a real Prometheus says it has drained (its gauges come from the test's gateway-shaped
exporter: no gateway runs here) every vLLM Deployment goes to 0 and its pods away; a canary in
progress is held where it was, every other child stays the same
object (same uid), the gateway is not restarted and gets the suspension live; resuming brings the
replicas (an autoscaled version's floor, once, for its autoscaler to take over from), the autoscalers
and the canary back. An HPA is kept and deactivated by the real
kube-controller-manager while its target is at 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.dev.cluster import LocalCluster
from llmops.operators.modeldeployment.canary import PrometheusSource
from llmops.operators.modeldeployment.plan import ServingSettings
from tests.cluster.modeldeployment.support import (
    GatewayMetrics,
    apply,
    condition,
    deployment,
    events,
    get,
    running_operator,
)
from tests.helpers import LOCAL_REGISTRY_POD_SECURITY, eventually

pytestmark = [pytest.mark.usefixtures("llmops_crds"), LOCAL_REGISTRY_POD_SECURITY]

KINDS = (
    "deployments,services,configmaps,scaledobjects,horizontalpodautoscalers,poddisruptionbudgets,"
    "networkpolicies,podmonitors,servicemonitors,prometheusrules"
)


def children(cluster: LocalCluster, namespace: str) -> dict[tuple[str, str], dict]:
    out = cluster.kubectl(
        "get", KINDS, "-n", namespace, "-l", "app.kubernetes.io/managed-by=llmops", "-o", "json"
    )
    return {(o["kind"], o["metadata"]["name"]): o for o in json.loads(out.stdout)["items"]}


def pods(cluster: LocalCluster, namespace: str, deployment_name: str) -> int:
    dep = get(cluster, "deployment", deployment_name, namespace) or {}
    return int((dep.get("status") or {}).get("replicas") or 0)


def md_state(cluster: LocalCluster, namespace: str) -> tuple[str | None, str | None, str | None]:
    md = get(cluster, "md", "bot", namespace) or {}
    ready, suspended = condition(md, "Ready"), condition(md, "Suspended")
    return (md.get("status") or {}).get("phase"), ready.get("status"), suspended.get("status")


@pytest.mark.usefixtures("kubeconfig_env")
def test_suspend_drains_then_scales_every_version_to_zero_keeps_the_rest_and_resume_restores_it(
    cluster: LocalCluster, namespace: str, registry: Path, prometheus: tuple[str, GatewayMetrics]
) -> None:
    url, gauges = prometheus
    gauges.suspended.set(0)
    gauges.inflight.labels("1").set(1)  # a request at version 1's replica
    # The analysis window is an hour: the canary sits at its first step, its clock running.
    canary = {
        "model": {"name": "support-bot", "version": "2"},
        "weight": 20,
        "steps": [60],
        "analysis": {"intervalSeconds": 3600},
    }
    body = deployment(
        "bot",
        registry,
        autoscaling={"minReplicas": 1, "maxReplicas": 3},  # KEDA (its CRD only: no KEDA runs here)
        rollout={"canary": canary},
        monitoring={"serviceMonitor": True, "alerts": {"p95LatencyMs": 2000}},
        gateway={"replicas": 1},
    )
    settings = ServingSettings(prometheus_url=url, resync_seconds=600, scrape_interval="1s")
    with running_operator(namespace, settings, PrometheusSource(url)):
        apply(cluster, namespace, body)
        eventually(
            lambda: (
                condition(get(cluster, "md", "bot", namespace), "Ready").get("reason") == "CanaryAnalysing"
                and (get(cluster, "md", "bot", namespace) or {})["status"]["canary"].get("stepStartTime")
            ),
            timeout=120,
        )
        before = children(cluster, namespace)
        md = get(cluster, "md", "bot", namespace)
        assert md is not None
        canary_before = md["status"]["canary"]
        assert condition(md, "Suspended")["status"] == "False"
        assert condition(md, "Suspended")["reason"] == "NotSuspended"
        vllm = ["bot-1-vllm", "bot-2-vllm"]
        assert all(pods(cluster, namespace, d) == 1 for d in vllm)

        body["spec"]["suspend"] = True
        apply(cluster, namespace, body)

        def reconciling_message() -> str:
            md = get(cluster, "md", "bot", namespace)
            draining = md_state(cluster, namespace) == ("Suspended", "Unknown", "True")
            return condition(md, "Reconciling").get("message", "") if draining else ""

        # The gateway is told at once; the model servers wait until it has taken the suspend...
        eventually(
            lambda: "a gateway pod has not taken the suspend yet" in reconciling_message(), timeout=120
        )
        config = json.loads(
            (get(cluster, "configmap", "bot-gateway", namespace) or {})["data"]["config.json"]
        )
        assert config["suspension"] == {"modelDeployment": "bot", "namespace": namespace}
        # ... and until no request is at a replica.
        gauges.suspended.set(1)
        eventually(lambda: "1 request(s) in flight at the gateway" in reconciling_message(), timeout=60)
        waiting = children(cluster, namespace)
        for name in vllm:
            assert pods(cluster, namespace, name) == 1
            assert waiting[("Deployment", name)]["spec"] == before[("Deployment", name)]["spec"]
            assert waiting[("ScaledObject", name)]["metadata"].get("annotations") is None
        gauges.inflight.labels("1").set(0)
        eventually(lambda: md_state(cluster, namespace) == ("Suspended", "True", "True"), timeout=120)
        md = get(cluster, "md", "bot", namespace)
        assert md is not None
        assert condition(md, "Ready")["reason"] == "Suspended"
        assert condition(md, "Suspended")["reason"] == "Suspended"
        assert md["status"]["replicas"] == 0 and md["status"]["readyReplicas"] == 0
        # The canary is held where it was: same step, weight and clock, no verdict.
        assert md["status"]["canary"] == canary_before
        after = children(cluster, namespace)
        assert set(after) == set(before)  # nothing deleted, nothing added
        for key, obj in after.items():
            assert obj["metadata"]["uid"] == before[key]["metadata"]["uid"], key  # not re-created
        for name in vllm:
            assert after[("Deployment", name)]["spec"]["replicas"] == 0
            assert pods(cluster, namespace, name) == 0
            annotations = after[("ScaledObject", name)]["metadata"].get("annotations") or {}
            assert annotations.get("autoscaling.keda.sh/paused-replicas") == "0"
        gateway = after[("Deployment", "bot-gateway")]
        assert gateway["spec"]["replicas"] == 1
        assert gateway["spec"]["template"] == before[("Deployment", "bot-gateway")]["spec"]["template"]
        config = json.loads(after[("ConfigMap", "bot-gateway")]["data"]["config.json"])
        assert config["suspension"] == {"modelDeployment": "bot", "namespace": namespace}
        suspended = [e for e in events(cluster, namespace, "bot") if e["reason"] == "Suspended"]
        assert len(suspended) == 1 and suspended[0]["type"] == "Normal"

        body["spec"]["suspend"] = False
        apply(cluster, namespace, body)
        eventually(
            lambda: (
                condition(get(cluster, "md", "bot", namespace), "Ready").get("reason") == "CanaryAnalysing"
            ),
            timeout=120,
        )
        md = get(cluster, "md", "bot", namespace)
        assert md is not None and md_state(cluster, namespace) == ("Ready", "True", "False")
        assert condition(md, "Suspended")["reason"] == "NotSuspended"
        # The canary resumes at its step; its clock restarted once it was ready again.
        assert {k: md["status"]["canary"][k] for k in ("step", "weight", "verdict")} == {
            k: canary_before[k] for k in ("step", "weight", "verdict")
        }
        resumed = children(cluster, namespace)
        for name in vllm:
            assert pods(cluster, namespace, name) == 1
            assert "autoscaling.keda.sh/paused-replicas" not in (
                resumed[("ScaledObject", name)]["metadata"].get("annotations") or {}
            )
        assert "suspension" not in json.loads(resumed[("ConfigMap", "bot-gateway")]["data"]["config.json"])
        assert {k: o["metadata"]["uid"] for k, o in resumed.items()} == {
            k: o["metadata"]["uid"] for k, o in before.items()
        }
        assert any(e["reason"] == "Resumed" for e in events(cluster, namespace, "bot"))


@pytest.mark.usefixtures("kubeconfig_env")
def test_an_hpa_is_kept_and_deactivated_while_suspended(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """engine: hpa, and no Prometheus: with LLMOPS_SUSPEND_DRAIN_SECONDS 0 the model servers go to 0 at
    once. The HPA cannot hold 0 replicas; suspended, it stays, and the real HPA controller
    deactivates it because its target is at 0 (ScalingActive=False, ScalingDisabled). Resumed, the
    operator writes the Deployment's floor (minReplicas) once, since left at 0 the HPA would stay
    deactivated, and the HPA is active again."""
    body = deployment(
        "bot",
        registry,
        autoscaling={"engine": "hpa", "minReplicas": 1, "maxReplicas": 3},
        gateway={"replicas": 1},
    )
    settings = ServingSettings(resync_seconds=600, suspend_drain_seconds=0)

    def scaling_active() -> dict:
        hpa = get(cluster, "hpa", "bot-1-vllm", namespace) or {}
        return next(
            (c for c in (hpa.get("status") or {}).get("conditions", []) if c["type"] == "ScalingActive"), {}
        )

    with running_operator(namespace, settings):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        uid = (get(cluster, "hpa", "bot-1-vllm", namespace) or {})["metadata"]["uid"]
        body["spec"]["suspend"] = True
        apply(cluster, namespace, body)
        eventually(lambda: md_state(cluster, namespace) == ("Suspended", "True", "True"), timeout=120)
        assert (get(cluster, "deployment", "bot-1-vllm", namespace) or {})["spec"]["replicas"] == 0
        eventually(lambda: scaling_active().get("reason") == "ScalingDisabled", timeout=120)
        assert scaling_active()["status"] == "False"
        assert (get(cluster, "hpa", "bot-1-vllm", namespace) or {})["metadata"]["uid"] == uid

        body["spec"]["suspend"] = False
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Suspended=False", "--timeout=90s")
        eventually(lambda: md_state(cluster, namespace) == ("Ready", "True", "False"), timeout=120)
        assert (get(cluster, "deployment", "bot-1-vllm", namespace) or {})["spec"]["replicas"] == 1
        assert pods(cluster, namespace, "bot-1-vllm") == 1
        eventually(lambda: scaling_active().get("reason") not in (None, "ScalingDisabled"), timeout=120)
        assert (get(cluster, "hpa", "bot-1-vllm", namespace) or {})["metadata"]["uid"] == uid
