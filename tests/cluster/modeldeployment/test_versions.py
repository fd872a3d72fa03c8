"""Versions on the real control plane: one version becomes Ready, heals and is collected; a new version
takes over only once ready; unresolvable, adapter and ungated versions; aliases followed as they move.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmops.dev.cluster import LocalCluster
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.runtime import REQUEST_ANNOTATION
from llmops.registry import Content, GateVerdict, Lineage, Quantization, move_alias, register
from llmops.storage import LocalStore
from tests.cluster.modeldeployment.support import (
    apply,
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
def test_single_version_becomes_ready_heals_scales_to_zero_and_is_collected(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    body = deployment(
        "bot",
        registry,
        resources={"cpu": 2, "memory": "8Gi", "gpus": 1},
        autoscaling={"minReplicas": 1, "maxReplicas": 3, "scaleToZero": True},
        monitoring={"serviceMonitor": True, "alerts": {"p95LatencyMs": 2000, "maxErrorRate": 0.05}},
        gateway={"replicas": 1},
    )
    # A short resync: every few seconds the operator applies all children again, as after drift.
    with running_operator(namespace, ServingSettings(resync_seconds=3)):
        apply(cluster, namespace, body)
        waited = cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert "condition met" in waited.stdout
        # Created at KEDA's idle count (0), not the apiserver's default of 1: no pod until a request.
        md = eventually(
            lambda: (o := get(cluster, "md", "bot", namespace))["status"]["phase"] == "ScaledToZero" and o
        )
        assert get(cluster, "deployment", "bot-1-vllm", namespace)["spec"]["replicas"] == 0  # type: ignore[index]
        # KEDA waking it (done by hand here, through the scale subresource as KEDA does).
        cluster.kubectl("scale", "deployment", "bot-1-vllm", "-n", namespace, "--replicas=1")
        eventually(lambda: get(cluster, "md", "bot", namespace)["status"]["readyReplicas"] == 1)
        md = get(cluster, "md", "bot", namespace)
        assert md is not None
        status = md["status"]
        assert status["phase"] == "Ready" and status["endpoint"] == f"http://bot-gateway.{namespace}.svc/v1"
        assert status["versions"] == [
            {
                "name": "support-bot",
                "version": "1",
                "role": "stable",
                "weight": 100,
                "replicas": 1,
                "readyReplicas": 1,
                "deployment": "bot-1-vllm",
            }
        ]
        assert status["readyReplicas"] == 1 and status["observedGeneration"] == md["metadata"]["generation"]
        assert names(cluster, "deployments", namespace) == {"bot-1-vllm", "bot-gateway"}
        assert names(cluster, "scaledobjects", namespace) == {"bot-1-vllm"}
        assert names(cluster, "podmonitors", namespace) == {"bot-vllm"}
        assert names(cluster, "prometheusrules", namespace) == {"bot-slo"}
        assert len(status["inventory"]) == 15
        pod = json.loads(
            cluster.kubectl(
                "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=model-server", "-o", "json"
            ).stdout
        )["items"][0]
        assert pod["spec"]["nodeName"] == "kwok-gpu-0"  # the GPU request and toleration at work

        # A child deleted behind the operator's back comes back (the child watch).
        cluster.kubectl("delete", "deployment", "bot-1-vllm", "-n", namespace)
        eventually(
            lambda: (d := get(cluster, "deployment", "bot-1-vllm", namespace)) and d["metadata"]["uid"]
        )

        # Re-created at KEDA's idle count; KEDA wakes it again, then scales it to zero (by hand here):
        # the status shows it; still Ready.
        assert get(cluster, "deployment", "bot-1-vllm", namespace)["spec"]["replicas"] == 0  # type: ignore[index]
        cluster.kubectl("scale", "deployment", "bot-1-vllm", "-n", namespace, "--replicas=1")
        eventually(lambda: get(cluster, "md", "bot", namespace)["status"]["readyReplicas"] == 1)
        cluster.kubectl("scale", "deployment", "bot-1-vllm", "-n", namespace, "--replicas=0")
        md = eventually(
            lambda: (o := get(cluster, "md", "bot", namespace))["status"]["phase"] == "ScaledToZero" and o
        )
        assert condition(md, "Ready")["status"] == "True" and "wakes it" in condition(md, "Ready")["message"]
        # The operator leaves replicas to the autoscaler: its resyncs do not undo the scale-down.
        time.sleep(8)
        assert get(cluster, "deployment", "bot-1-vllm", namespace)["spec"]["replicas"] == 0  # type: ignore[index]

        # Deleting the ModelDeployment removes every child (owner references, garbage collector).
        cluster.kubectl("delete", "md", "bot", "-n", namespace, "--wait=true", "--timeout=60s")
        eventually(lambda: not names(cluster, "deployments", namespace), timeout=60)
        eventually(
            lambda: not names(cluster, "configmaps", namespace) and not names(cluster, "services", namespace)
        )


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_new_version_takes_over_only_once_it_is_ready(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    body = deployment("bot", registry, gateway={"replicas": 1})
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        old_pod = cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", "llmops.io/model-version=1", "-o", "name"
        ).stdout.split()
        # Version 2, on nodes that do not exist yet: it cannot start, so version 1 keeps all traffic
        # (and is not touched by the spec change: its pod is the same).
        body["spec"]["model"]["version"] = "2"
        body["spec"]["resources"]["nodeSelector"] = {"pool": "not-yet"}
        apply(cluster, namespace, body)
        md = eventually(
            lambda: (
                (o := get(cluster, "md", "bot", namespace))["status"]["observedGeneration"] == 2
                and len(o["status"]["versions"]) == 2
                and o
            )
        )
        assert [(v["version"], v["role"], v["weight"]) for v in md["status"]["versions"]] == [
            ("2", "stable", 0),
            ("1", "previous", 100),
        ]
        assert (
            md["status"]["phase"] == "Progressing"
            and "1 serves until support-bot:2" in md["status"]["message"]
        )
        eventually(lambda: gateway_weights(cluster, namespace) == {"2": 0, "1": 100})
        assert (
            cluster.kubectl(
                "get", "pods", "-n", namespace, "-l", "llmops.io/model-version=1", "-o", "name"
            ).stdout.split()
            == old_pod
        )
        # Now it can start: once ready it takes over, and version 1 goes away.
        cluster.kubectl("label", "node", "kwok-cpu-1", "pool=not-yet")
        try:
            cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
            md = get(cluster, "md", "bot", namespace)
            assert [(v["version"], v["role"], v["weight"]) for v in md["status"]["versions"]] == [
                ("2", "stable", 100)
            ]  # type: ignore[index]
            eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
            assert gateway_weights(cluster, namespace) == {"2": 100}
        finally:
            cluster.kubectl("label", "node", "kwok-cpu-1", "pool-")


@pytest.mark.usefixtures("kubeconfig_env")
def test_unresolvable_versions_stall_with_a_clear_message(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(
            cluster, namespace, deployment("missing", registry, model={"name": "support-bot", "version": "9"})
        )
        cluster.kubectl("wait", "md/missing", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        md = get(cluster, "md", "missing", namespace)
        stalled = condition(md, "Stalled")
        assert stalled["reason"] == "VersionNotFound" and "spec.model" in stalled["message"]
        assert "has no version '9'" in stalled["message"] and condition(md, "Ready")["status"] == "False"
        assert not names(cluster, "deployments", namespace)
        warning = eventually(lambda: events(cluster, namespace, "missing"))
        assert warning[0]["reason"] == "VersionNotFound" and warning[0]["type"] == "Warning"

        # A version whose gates failed is refused too (a manifest not written by register()).
        key = registry / "models/support-bot/versions/3/manifest.json"
        manifest = json.loads(key.read_text())
        manifest["gates"][0]["passed"] = False
        key.write_text(json.dumps(manifest))
        apply(
            cluster, namespace, deployment("gated", registry, model={"name": "support-bot", "version": "3"})
        )
        cluster.kubectl("wait", "md/gated", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        stalled = condition(get(cluster, "md", "gated", namespace), "Stalled")
        assert stalled["reason"] == "GatesNotPassed" and "accuracy" in stalled["message"]

        # An alias that appears later: asking for a reconcile (the annotation users can set too) heals it.
        apply(
            cluster,
            namespace,
            deployment("aliased", registry, model={"name": "support-bot", "alias": "prod"}),
        )
        cluster.kubectl("wait", "md/aliased", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        (registry / "models/support-bot/aliases").mkdir(parents=True, exist_ok=True)
        (registry / "models/support-bot/aliases/prod.json").write_text('{"version": "2"}')
        cluster.kubectl(
            "annotate", "md", "aliased", "-n", namespace, f"{REQUEST_ANNOTATION}=1", "--overwrite"
        )
        cluster.kubectl("wait", "md/aliased", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert get(cluster, "md", "aliased", namespace)["status"]["versions"][0]["version"] == "2"  # type: ignore[index]


@pytest.mark.usefixtures("kubeconfig_env")
def test_lora_adapters_are_served_from_what_the_manifest_says(
    cluster: LocalCluster, namespace: str, registry: Path, tmp_path: Path
) -> None:
    """A full model listed under engine.loraAdapters stalls, naming the field; a version registered
    as a lora TrainingJob registers it (merged model, adapter in adapter/) is served, with vLLM's
    --lora-modules on the adapter's folder and the fetcher taking only that folder. (vLLM loading
    it: tests/workloads/test_training_workload.py::test_lora_version_served_as_adapter.)"""
    lora = tmp_path / "lora"
    (lora / "adapter").mkdir(parents=True)
    (lora / "config.json").write_text("{}")
    (lora / "adapter" / "adapter_config.json").write_text("{}")
    content = Content.from_saved(
        {"format": "safetensors", "merged": True, "adapter": "adapter/"}, "support-bot:1"
    )
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    register(
        LocalStore(registry), "billing", lora, metrics={}, gates=gates, lineage=Lineage(), content=content
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        adapters = [{"name": "billing", "model": {"name": "support-bot", "version": "2"}}]
        body = deployment("adapters", registry, engine={"loraAdapters": adapters})
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/adapters", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        stalled = condition(get(cluster, "md", "adapters", namespace), "Stalled")
        assert stalled["reason"] == "WrongContent", stalled
        assert "spec.engine.loraAdapters[billing].model: support-bot:2" in stalled["message"]
        assert "a full model is served as spec.model" in stalled["message"]
        assert not names(cluster, "deployments", namespace)

        body["spec"]["engine"]["loraAdapters"][0]["model"] = {"name": "billing", "version": "1"}
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/adapters", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        pod = get(cluster, "deployment", "adapters-1-vllm", namespace)["spec"]["template"]["spec"]  # type: ignore[index]
        argv = pod["containers"][0]["command"]
        assert argv[argv.index("--lora-modules") + 1] == "billing=/models/adapters/billing/adapter"
        assert "adapters/billing=billing:1/adapter" in pod["initContainers"][0]["command"]


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_quantized_version_is_served_as_its_manifest_says(
    cluster: LocalCluster, namespace: str, registry: Path, tmp_path: Path
) -> None:
    """A version a quantize TrainingJob registered says how its weights are stored
    (content.quantization): vLLM gets --quantization compressed-tensors without the user writing
    it; a spec.engine.quantization that contradicts the manifest stalls, naming the field. (vLLM
    serving such a version: tests/workloads/test_compress_workload.py.)"""
    quantized = tmp_path / "w8a8"
    quantized.mkdir()
    config = {"quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized"}}
    (quantized / "config.json").write_text(json.dumps(config))
    content = Content(quantization=Quantization.from_config(config, "W8A8", "RTN"))
    gates = [GateVerdict(metric="perplexity", operator="<=", threshold=1e9, value=9.0, passed=True)]
    lineage = Lineage(parent="support-bot:1", method="quantize")
    register(
        LocalStore(registry), "bot-w8a8", quantized, metrics={}, gates=gates, lineage=lineage, content=content
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        body = deployment("quantized", registry, model={"name": "bot-w8a8", "version": "1"})
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/quantized", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        pod = get(cluster, "deployment", "quantized-1-vllm", namespace)["spec"]["template"]["spec"]  # type: ignore[index]
        argv = pod["containers"][0]["command"]
        assert argv[argv.index("--quantization") + 1] == "compressed-tensors"

        body["spec"]["engine"] = {"quantization": "awq"}
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/quantized", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        stalled = condition(get(cluster, "md", "quantized", namespace), "Stalled")
        assert stalled["reason"] == "WrongContent", stalled
        assert (
            "spec.engine.quantization is awq, but spec.model bot-w8a8:1 is quantized as" in stalled["message"]
        )
        assert "compressed-tensors W8A8" in stalled["message"]


@pytest.mark.usefixtures("kubeconfig_env")
def test_ungated_versions_are_served_only_by_opt_in(
    cluster: LocalCluster, namespace: str, registry: Path, tmp_path: Path
) -> None:
    """A version registered without gates (a TrainingJob that declared none) is refused until the
    ModelDeployment sets spec.allowUngated; the same spec with the opt-in becomes Ready."""
    model = tmp_path / "ungated"
    model.mkdir()
    (model / "config.json").write_text("{}")
    version = register(LocalStore(registry), "support-bot", model, metrics={}, gates=[], lineage=Lineage())
    assert version.ungated
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        body = deployment("ungated", registry, model={"name": "support-bot", "version": version.version})
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/ungated", "-n", namespace, "--for=condition=Stalled", "--timeout=60s")
        stalled = condition(get(cluster, "md", "ungated", namespace), "Stalled")
        assert stalled["reason"] == "GatesNotPassed"
        assert "without any gate" in stalled["message"] and "spec.allowUngated" in stalled["message"]
        assert not names(cluster, "deployments", namespace)

        body["spec"]["allowUngated"] = True
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/ungated", "-n", namespace, "--for=condition=Ready", "--timeout=90s")


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_deployment_follows_its_aliases(cluster: LocalCluster, namespace: str, registry: Path) -> None:
    """A ModelDeployment on `alias: champion` serves what the alias names, and follows a move made in
    the registry alone (no change to the object: only the alias poll, 2 s here, can see it; the resync
    is 10 minutes away). A canary on `alias: challenger` naming the champion's version is no canary;
    moving challenger starts one. status.aliases says what each alias resolved to."""
    store = LocalStore(registry)
    move_alias(store, "support-bot", "champion", "1", by="user:test", reason="first release")
    # No Prometheus: the canary's analysis reaches no verdict and its first step holds.
    settings = ServingSettings(resync_seconds=600, alias_poll_seconds=2, prometheus_url="http://127.0.0.1:9")

    def status() -> dict:
        return get(cluster, "md", "bot", namespace)["status"]  # type: ignore[index]

    def served() -> list[tuple[str, str, int]]:
        return [(v["version"], v["role"], v["weight"]) for v in status().get("versions", [])]

    def resolved() -> dict[str, tuple[str, str]]:
        return {a["fieldPath"]: (a["alias"], a["version"]) for a in status().get("aliases", [])}

    with running_operator(namespace, settings):
        body = deployment(
            "bot", registry, model={"name": "support-bot", "alias": "champion"}, gateway={"replicas": 1}
        )
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        assert served() == [("1", "stable", 100)]
        assert status()["aliases"] == [
            {"fieldPath": "spec.model", "name": "support-bot", "alias": "champion", "version": "1"}
        ]

        # The alias moves in the registry: version 2 takes over, version 1 goes away.
        move_alias(store, "support-bot", "champion", "2", by="user:test", reason="better on the eval set")
        eventually(
            lambda: served() == [("2", "stable", 100)] and resolved() == {"spec.model": ("champion", "2")}
        )
        eventually(lambda: names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-gateway"})
        assert gateway_weights(cluster, namespace) == {"2": 100}

        # A canary on challenger, which names the champion's version: nothing to compare, no canary.
        move_alias(store, "support-bot", "challenger", "2", by="user:test", reason="same as champion")
        analysis = {"intervalSeconds": 10, "maxErrorRate": 0.05}
        canary = {"model": {"name": "support-bot", "alias": "challenger"}, "weight": 20, "steps": [60],
                  "analysis": analysis}  # fmt: skip
        body["spec"]["rollout"] = {"canary": canary}
        apply(cluster, namespace, body)
        eventually(lambda: status()["observedGeneration"] == 2 and "spec.rollout.canary.model" in resolved())
        assert resolved() == {
            "spec.model": ("champion", "2"),
            "spec.rollout.canary.model": ("challenger", "2"),
        }
        assert served() == [("2", "stable", 100)] and status().get("canary") is None

        # Challenger moves to version 3: the canary starts on it.
        move_alias(store, "support-bot", "challenger", "3", by="retrainpolicy/test/bot", reason="new run")
        eventually(lambda: (status().get("canary") or {}).get("version") == "3", timeout=90)
        assert status()["canary"]["baselineVersion"] == "2"
        assert resolved()["spec.rollout.canary.model"] == ("challenger", "3")
        eventually(lambda: served() == [("2", "stable", 80), ("3", "canary", 20)], timeout=90)
        assert names(cluster, "deployments", namespace) == {"bot-2-vllm", "bot-3-vllm", "bot-gateway"}
