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
            managers = replicas_managers(live)
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


CREATED_AT = {
    # name: (autoscaling, canary or None, {Deployment: the count it is created at, None: its autoscaler's})
    "keda-min-2": ({"engine": "keda", "minReplicas": 2, "maxReplicas": 4}, None, {"bot-1-vllm": 2}),
    # The apiserver's default count: the manifest leaves it out from the start (writes_start_count).
    "keda-min-1": ({"engine": "keda", "minReplicas": 1, "maxReplicas": 4}, None, {"bot-1-vllm": 1}),
    "hpa-min-3": ({"engine": "hpa", "minReplicas": 3, "maxReplicas": 5}, None, {"bot-1-vllm": 3}),
    # Scale to zero: KEDA holds an idle version at idleReplicaCount 0; the first request wakes it.
    "scale-to-zero": ({"minReplicas": 1, "maxReplicas": 3, "scaleToZero": True}, None, {"bot-1-vllm": 0}),
    # The canary's count is its ScaledObject's minReplicaCount (read from the apiserver).
    "keda-canary": (
        {"engine": "keda", "minReplicas": 2, "maxReplicas": 4},
        {"model": {"name": "support-bot", "version": "2"}, "weight": 10, "steps": [50]},
        {"bot-1-vllm": 2, "bot-2-vllm": None},
    ),
}


@pytest.mark.usefixtures("kubeconfig_env")
@pytest.mark.parametrize("case", list(CREATED_AT))
def test_an_autoscaled_deployment_is_created_at_its_autoscalers_count(
    cluster: LocalCluster, namespace: str, registry: Path, case: str
) -> None:
    """A watch opened before the apply sees every version of each vLLM Deployment, from its first:
    its replicas are never anything but the count its autoscaler holds it at (minReplicas, the idle 0
    of scale to zero, a canary's floor), never the apiserver's default of 1 until the autoscaler's
    first poll unless that is the count (keda-min-1: then never the operator's field, nothing handed
    over). Then the autoscaler moves them (KEDA and the HPA controller write the scale
    subresource; `kubectl scale` stands in for KEDA, which does not run here) and a reconcile that
    re-applies the Deployment (a new template) leaves the autoscaler's count as it is."""
    autoscaling, canary, wanted = CREATED_AT[case]
    spec: dict = {"autoscaling": autoscaling, "gateway": {"replicas": 1}}
    if canary:
        spec["rollout"] = {"canary": canary}
    if autoscaling.get("scaleToZero"):
        spec["resources"] = {"cpu": 1, "memory": "2Gi", "gpus": 1}
    body = deployment("bot", registry, **spec)
    recorder = Recorder(cluster.kubeconfig, namespace, "Deployment", "ScaledObject")
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        try:
            time.sleep(1)  # the watches are open before the first object exists
            apply(cluster, namespace, body)
            cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
            eventually(lambda: set(wanted) <= names(cluster, "deployments", namespace))
            if wanted == {"bot-1-vllm": 1}:  # created at the default: never ours, nothing handed over
                first_ready = json.loads(
                    cluster.kubectl(
                        "get", "deployment", "bot-1-vllm", "-n", namespace, "-o", "json",
                        "--show-managed-fields",
                    ).stdout
                )  # fmt: skip
                owners = replicas_managers(first_ready)
                assert not owners & {"llmops", "llmops-handover"}, owners
            for name, count in wanted.items():
                if count is None:
                    count = get(cluster, "scaledobject", name, namespace)["spec"]["minReplicaCount"]  # type: ignore[index]
                    wanted[name] = count

            # The autoscaler moves the first version to its maximum; a new template is applied.
            def scale() -> tuple[int, int] | None:
                # On the version read (--resource-version): every later version is the autoscaler's.
                d = get(cluster, "deployment", "bot-1-vllm", namespace) or {}
                rv = d["metadata"]["resourceVersion"]
                done = cluster.kubectl(
                    "scale", "deployment", "bot-1-vllm", "-n", namespace, f"--resource-version={rv}",
                    f"--replicas={autoscaling['maxReplicas']}", check=False,
                )  # fmt: skip
                return (int(rv), d["metadata"]["generation"]) if done.returncode == 0 else None

            moved_at, generation = eventually(scale)
            body["spec"].setdefault("engine", {})["maxModelLen"] = 2048
            apply(cluster, namespace, body)
            eventually(
                lambda: (
                    (d := get(cluster, "deployment", "bot-1-vllm", namespace))
                    and d["metadata"]["generation"] > generation + 1  # the scale, then the template
                )
            )
            cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
            after = json.loads(
                cluster.kubectl(
                    "get", "deployment", "bot-1-vllm", "-n", namespace, "-o", "json", "--show-managed-fields"
                ).stdout
            )
        finally:
            events = recorder.stop()
    seen: dict[str, list[tuple[int, int | None]]] = {}
    for rv, type_, kind, o in events:
        if kind == "Deployment" and o["metadata"]["name"] in wanted and type_ != "DELETED":
            seen.setdefault(o["metadata"]["name"], []).append((rv, o["spec"].get("replicas")))
    print(f"{case}: wanted {wanted}; Deployment versions seen { ({n: len(v) for n, v in seen.items()}) }")
    for name, count in wanted.items():
        before = [r for rv, r in seen[name] if name != "bot-1-vllm" or rv <= moved_at]
        assert before and all(r == count for r in before), (name, count, seen[name])
    first = next(
        o for _, type_, kind, o in events if kind == "Deployment" and o["metadata"]["name"] == "bot-1-vllm"
    )
    assert first["metadata"]["generation"] == 1, first["metadata"]  # seen from its first version
    later = [r for rv, r in seen["bot-1-vllm"] if rv > moved_at]
    assert later and all(r == autoscaling["maxReplicas"] for r in later), later
    assert after["spec"]["replicas"] == autoscaling["maxReplicas"]
    managers = replicas_managers(after)
    assert "llmops" not in managers, managers  # the operator does not apply replicas once created


def replicas_managers(deployment: dict) -> set[str]:
    """The field managers that own the Deployment's spec.replicas."""
    return {
        m["manager"]
        for m in deployment["metadata"]["managedFields"]
        if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})
    }


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_scale_between_the_hand_overs_read_and_its_apply_is_kept(
    cluster: LocalCluster, namespace: str
) -> None:
    """The operator hands replicas over (it owned them: scale to zero's first apply wrote 0) while KEDA,
    or a person, scales the Deployment to 1 right after the hand-over read it: the read value (0) must
    not be written back over the scale. The scale is made between the two requests on purpose (a
    Kube whose first read scales after reading); everything else is the real apiserver."""
    from llmops.operators.apply import Applier
    from llmops.operators.kube import Kube

    class ScaledAfterRead(Kube):
        reads = 0

        def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict:
            live = super().get(api_version, kind, name, namespace)
            type(self).reads += 1
            if type(self).reads == 1:
                cluster.kubectl("scale", "deployment", name, "-n", namespace or "", "--replicas=1")
            return live

    def manifest(replicas: int | None) -> dict:
        labels = {"app": "scaled"}
        container = {"name": "c", "image": "registry.k8s.io/pause:3.10"}
        spec: dict = {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        }
        if replicas is not None:
            spec["replicas"] = replicas
        meta = {"name": "scaled", "namespace": namespace}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}

    kube = ScaledAfterRead.from_environment()
    applier = Applier(kube)
    applier.apply(manifest(0))  # scale to zero's first apply: replicas 0, ours
    applier.apply(manifest(None))  # the autoscaler's from now on: handed over, the scale in between
    live = get(cluster, "deployment", "scaled", namespace)
    assert live is not None and live["spec"]["replicas"] == 1, live and live["spec"]
    assert ScaledAfterRead.reads == 2  # the hand-over's apply was refused (409) and the object read again
