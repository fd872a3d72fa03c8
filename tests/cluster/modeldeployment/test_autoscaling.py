"""Autoscalers on the real control plane: handing replicas to an autoscaler, switching engines, and a
replaced autoscaler held by a finalizer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmops.dev.cluster import LocalCluster
from llmops.operators.modeldeployment.plan import ServingSettings
from tests.cluster.modeldeployment.support import (
    Recorder,
    apply,
    condition,
    deployment,
    get,
    names,
    running_operator,
)
from tests.helpers import LOCAL_REGISTRY_POD_SECURITY, eventually

pytestmark = [pytest.mark.usefixtures("llmops_crds"), LOCAL_REGISTRY_POD_SECURITY]


@pytest.mark.usefixtures("kubeconfig_env")
def test_handing_replicas_to_an_autoscaler_keeps_the_running_replicas(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """min = max = 3 (fixed replicas, ours) -> max 5 (an HPA's): the Deployment's replicas never
    drop below 3 on the way, and the HPA is then their only writer. And back."""
    body = deployment(
        "bot",
        registry,
        autoscaling={"engine": "hpa", "minReplicas": 3, "maxReplicas": 3},
        gateway={"replicas": 1},
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert get(cluster, "deployment", "bot-1-vllm", namespace)["spec"]["replicas"] == 3  # type: ignore[index]
        recorder = Recorder(cluster.kubeconfig, namespace, "Deployment", "HorizontalPodAutoscaler")
        try:
            body["spec"]["autoscaling"]["maxReplicas"] = 5
            apply(cluster, namespace, body)
            eventually(lambda: "bot-1-vllm" in names(cluster, "horizontalpodautoscalers", namespace))
            cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
            live = json.loads(
                cluster.kubectl(
                    "get", "deployment", "bot-1-vllm", "-n", namespace, "-o", "json", "--show-managed-fields"
                ).stdout
            )
            managers = {
                m["manager"]
                for m in live["metadata"]["managedFields"]
                if "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {})
            }  # type: ignore[index]
            assert "llmops" not in managers, managers  # the operator no longer applies replicas
            # Back to fixed replicas: the operator owns them again and the HPA goes.
            body["spec"]["autoscaling"]["maxReplicas"] = 3
            apply(cluster, namespace, body)
            eventually(lambda: not names(cluster, "horizontalpodautoscalers", namespace))
        finally:
            events = recorder.stop()
    replicas = [
        (rv, o["spec"].get("replicas"))
        for rv, type_, kind, o in events
        if kind == "Deployment" and o["metadata"]["name"] == "bot-1-vllm" and type_ != "DELETED"
    ]
    assert replicas and all(r is not None and r >= 3 for _, r in replicas), replicas


@pytest.mark.usefixtures("kubeconfig_env")
def test_switching_the_autoscaler_engine_removes_the_old_one_first(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """hpa -> keda -> hpa on a Ready ModelDeployment. KEDA's admission webhook (not running here)
    refuses a ScaledObject for a Deployment an HPA scales: the apiserver's order of events shows the
    HPA gone before the ScaledObject is created, and the other way round; the object ends Ready."""
    body = deployment(
        "bot",
        registry,
        autoscaling={"engine": "hpa", "minReplicas": 1, "maxReplicas": 3},
        gateway={"replicas": 1},
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert names(cluster, "horizontalpodautoscalers", namespace) == {"bot-1-vllm"}
        recorder = Recorder(cluster.kubeconfig, namespace, "HorizontalPodAutoscaler", "ScaledObject")
        try:
            time.sleep(1)  # the watches are open
            for engine, kind in (("keda", "scaledobjects"), ("hpa", "horizontalpodautoscalers")):
                body["spec"]["autoscaling"]["engine"] = engine
                apply(cluster, namespace, body)
                eventually(lambda kind=kind: names(cluster, kind, namespace) == {"bot-1-vllm"})
                cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        finally:
            events = recorder.stop()
    order = [(kind, type_) for _, type_, kind, _ in events if type_ in ("ADDED", "DELETED")]
    hpa_gone = order.index(("HorizontalPodAutoscaler", "DELETED"))
    so_made = order.index(("ScaledObject", "ADDED"))
    assert hpa_gone < so_made, order
    so_gone = order.index(("ScaledObject", "DELETED"))
    hpa_made = next(
        i for i, e in enumerate(order) if e == ("HorizontalPodAutoscaler", "ADDED") and i > so_made
    )
    assert so_gone < hpa_made, order


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_replaced_autoscaler_held_by_a_finalizer_is_waited_for(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """keda -> hpa while the ScaledObject carries a finalizer (KEDA's own, which removes its HPA
    first; put there by hand, as KEDA does not run here): no HPA is created while the ScaledObject is
    still there, the object says what it waits for, and once it is gone the HPA follows."""
    body = deployment(
        "bot", registry, autoscaling={"minReplicas": 1, "maxReplicas": 3}, gateway={"replicas": 1}
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        patch = json.dumps({"metadata": {"finalizers": ["finalizer.keda.sh"]}})
        cluster.kubectl("patch", "scaledobject", "bot-1-vllm", "-n", namespace, "--type=merge", "-p", patch)
        body["spec"]["autoscaling"]["engine"] = "hpa"
        apply(cluster, namespace, body)
        md = eventually(
            lambda: (o := get(cluster, "md", "bot", namespace))["status"]["observedGeneration"] == 2 and o
        )
        assert "ScaledObject/bot-1-vllm to be deleted" in condition(md, "Reconciling")["message"]
        assert get(cluster, "scaledobject", "bot-1-vllm", namespace)["metadata"]["deletionTimestamp"]  # type: ignore[index]
        assert not names(cluster, "horizontalpodautoscalers", namespace)
        cluster.kubectl(
            "patch",
            "scaledobject",
            "bot-1-vllm",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata": {"finalizers": null}}',
        )
        eventually(
            lambda: names(cluster, "horizontalpodautoscalers", namespace) == {"bot-1-vllm"}, timeout=30
        )
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
