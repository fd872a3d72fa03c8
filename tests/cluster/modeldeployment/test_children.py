"""Children on the real control plane: every golden child passes a server-side dry run, a child deleted
by hand comes back, and the scale-to-zero example gets the monitors its scaler reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmops.dev.cluster import LocalCluster
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.registry import GateVerdict, Lineage, register, set_alias
from llmops.storage import LocalStore
from tests.cluster.modeldeployment.support import (
    GOLDEN,
    apply,
    deployment,
    get,
    names,
    running_operator,
)
from tests.helpers import LOCAL_REGISTRY_POD_SECURITY, eventually

pytestmark = [pytest.mark.usefixtures("llmops_crds"), LOCAL_REGISTRY_POD_SECURITY]


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.yaml")), ids=lambda p: p.stem)
def test_generated_children_pass_server_side_dry_run(
    cluster: LocalCluster, namespace: str, path: Path
) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=llmops",
        "--dry-run=server",
        "-f",
        "-",
        input=text,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout


# -- the operator ------------------------------------------------------------------------------


CHILD_KINDS = [
    ("deployment", "bot-1-vllm"),
    ("deployment", "bot-gateway"),
    ("service", "bot-1-vllm"),
    ("service", "bot-gateway"),
    ("configmap", "bot-gateway"),
    ("configmap", "bot-dashboard"),
    ("scaledobject", "bot-1-vllm"),
    ("networkpolicy", "bot-default-deny"),
    ("poddisruptionbudget", "bot-vllm"),
    ("podmonitor", "bot-vllm"),
    ("servicemonitor", "bot-gateway"),
    ("prometheusrule", "bot-slo"),
]


@pytest.mark.usefixtures("kubeconfig_env")
def test_every_child_deleted_by_hand_comes_back(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    """Each kind of child of a Ready ModelDeployment, deleted behind the operator's back, is applied
    again by the next reconcile, which its deletion asks for (the resync is 10 minutes away here)."""
    body = deployment(
        "bot",
        registry,
        autoscaling={"minReplicas": 1, "maxReplicas": 3},
        monitoring={"serviceMonitor": True, "alerts": {"p95LatencyMs": 2000}},
        gateway={"replicas": 1},
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        for kind, name in CHILD_KINDS:
            before = get(cluster, kind, name, namespace)
            assert before is not None, (kind, name)
            cluster.kubectl("delete", kind, name, "-n", namespace)
            eventually(
                lambda kind=kind, name=name, uid=before["metadata"]["uid"]: (
                    (o := get(cluster, kind, name, namespace)) is not None and o["metadata"]["uid"] != uid
                ),
                timeout=30,
            )
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")


@pytest.mark.usefixtures("kubeconfig_env")
def test_the_scale_to_zero_example_as_written_gets_the_monitors_its_scaler_reads(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """examples/modeldeployment-scale-to-zero.yaml leaves monitoring.serviceMonitor off. Its KEDA
    triggers read vLLM's queue and the gateway's pending requests: the monitors that scrape those
    exist and select the pods and Service that export them. (Only the registry is pointed at a local
    one holding the version; everything else is as shipped.)"""
    example = yaml.safe_load(
        (Path(__file__).parents[3] / "examples/modeldeployment-scale-to-zero.yaml").read_text()
    )
    assert not example["spec"].get("monitoring", {}).get("serviceMonitor")
    root = tmp_path / "registry"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    store = LocalStore(root)
    name = example["spec"]["model"]["name"]
    gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
    version = register(store, name, model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage())
    set_alias(store, name, example["spec"]["model"]["alias"], version.version)
    example["spec"]["registry"] = {"local": {"path": str(root)}}
    md = example["metadata"]["name"]
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, example)
        # Its pods ask for an NVIDIA-L4, which no fake node has: they stay Pending, which is enough here.
        scaled = eventually(lambda: get(cluster, "scaledobject", f"{md}-{version.version}-vllm", namespace))
        # Its first reconcile has applied every child (the monitors last) once it has written its status.
        eventually(
            lambda: ((get(cluster, "modeldeployment", md, namespace) or {}).get("status") or {}).get(
                "observedGeneration"
            )
        )
        assert len(names(cluster, "networkpolicies", namespace)) == 3
        queries = " ".join(t["metadata"]["query"] for t in scaled["spec"]["triggers"])
        assert "vllm:num_requests_waiting" in queries and "llmops_gateway_pending_requests" in queries

        def selected(kind: str, selector: dict) -> list[dict]:
            labels = ",".join(f"{k}={v}" for k, v in selector["matchLabels"].items())
            out = cluster.kubectl("get", kind, "-n", namespace, "-l", labels, "-o", "json")
            return json.loads(out.stdout)["items"]

        pod_monitor = get(cluster, "podmonitor", f"{md}-vllm", namespace)
        assert pod_monitor is not None, "vLLM's queue (the scaler's trigger) is not scraped"
        # Created at KEDA's idle count (0): the pods its monitor selects are those KEDA wakes (by hand
        # here, through the scale subresource as KEDA does).
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert get(cluster, "deployment", target, namespace)["spec"]["replicas"] == 0  # type: ignore[index]
        cluster.kubectl("scale", "deployment", target, "-n", namespace, "--replicas=1")
        pods = eventually(lambda: selected("pods", pod_monitor["spec"]["selector"]))
        assert pods and all(
            p["metadata"]["labels"]["app.kubernetes.io/component"] == "model-server" for p in pods
        )
        service_monitor = get(cluster, "servicemonitor", f"{md}-gateway", namespace)
        assert service_monitor is not None, "the gateway's pending requests (what wakes it) are not scraped"
        assert [s["metadata"]["name"] for s in selected("services", service_monitor["spec"]["selector"])] == [
            f"{md}-gateway"
        ]


@pytest.mark.usefixtures("kubeconfig_env")
def test_the_feedback_key_is_created_once_owned_and_mounted(
    cluster: LocalCluster, namespace: str, registry: Path, tmp_path: Path
) -> None:
    """With payload sampling, feedback is on: the operator creates the Secret `<md>-feedback-key`
    (64 hex digits), owned by the ModelDeployment, mounts it in the gateway, and keeps its value through
    later reconciles (a new key would void every completion id issued so far)."""
    import base64
    import re

    samples = {"local": {"path": str(tmp_path / "samples")}}
    body = deployment(
        "bot", registry, gateway={"replicas": 1, "payloadSampling": {"rate": 0, "destination": samples}}
    )
    with running_operator(namespace, ServingSettings(resync_seconds=1)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        secret = get(cluster, "secret", "bot-feedback-key", namespace)
        assert secret is not None
        (owner,) = secret["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner.get("controller")) == ("ModelDeployment", "bot", True)
        key = secret["data"]["key"]
        assert re.fullmatch("[0-9a-f]{64}", base64.b64decode(key).decode())
        pod = get(cluster, "deployment", "bot-gateway", namespace)["spec"]["template"]["spec"]  # type: ignore[index]
        assert {
            "name": "feedback-key",
            "secret": {"secretName": "bot-feedback-key", "defaultMode": 0o440},
        } in pod["volumes"]
        config = json.loads(get(cluster, "configmap", "bot-gateway", namespace)["data"]["config.json"])  # type: ignore[index]
        assert config["feedback"]["keyPath"] == "/etc/llmops/feedback-key/key"
        # A spec change reconciles again, past the resync period: the Secret is looked at, not replaced.
        body["spec"]["gateway"]["maxQueue"] = 10
        apply(cluster, namespace, body)
        eventually(
            lambda: (
                '"maxQueue": 10' in get(cluster, "configmap", "bot-gateway", namespace)["data"]["config.json"]
            ),  # type: ignore[index]
            timeout=60,
        )
        assert get(cluster, "secret", "bot-feedback-key", namespace)["data"]["key"] == key  # type: ignore[index]
