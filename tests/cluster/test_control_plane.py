"""The local control plane is a real Kubernetes: controllers, scheduler, GC, CRD schemas, helm.

kwok plays the kubelet (no containers run on this machine): it marks pods Running and Ready.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from llmops.dev.cluster import LocalCluster, process_alive
from llmops.dev.tools import binary
from tests.helpers import eventually

# What the `restricted` Pod Security Standard asks of a pod, which the `namespace` fixture enforces.
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def deployment(name: str, replicas: int = 2) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": RESTRICTED_POD,
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.example/app:1",
                            "securityContext": RESTRICTED_CONTAINER,
                        }
                    ],
                },
            },
        },
    }


def test_server_reports_v1_37(cluster: LocalCluster) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"].startswith("v1.37.")
    assert out["serverVersion"]["minor"] == "37"


def test_deployment_runs_on_fake_nodes_and_gc_removes_children(api_client, namespace: str) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, deployment("web"))

    rs = eventually(lambda: apps.list_namespaced_replica_set(namespace).items)
    assert rs[0].metadata.owner_references[0].kind == "Deployment"

    def ready_pods():
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        ready = [
            p
            for p in pods
            if p.status.phase == "Running"
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ready if len(ready) == 2 else None

    pods = eventually(ready_pods)
    assert {p.spec.node_name for p in pods} <= {"kwok-cpu-0", "kwok-cpu-1"}
    assert all(p.metadata.owner_references[0].kind == "ReplicaSet" for p in pods)
    eventually(
        lambda: (apps.read_namespaced_deployment_status("web", namespace).status.available_replicas or 0) == 2
    )

    # The garbage collector removes the ReplicaSet and the pods once their owner is gone.
    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    eventually(lambda: not apps.list_namespaced_replica_set(namespace).items)
    eventually(lambda: not core.list_namespaced_pod(namespace).items)


def test_gpu_pod_lands_on_the_gpu_node(api_client, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cuda"},
        "spec": {
            "securityContext": RESTRICTED_POD,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/cuda:1",
                    "resources": {"limits": {"nvidia.com/gpu": "2"}},
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    scheduled = eventually(lambda: core.read_namespaced_pod("cuda", namespace).spec.node_name)
    assert scheduled == "kwok-gpu-0"
    node = core.read_node("kwok-gpu-0")
    assert node.status.allocatable["nvidia.com/gpu"] == "8"


def rayjob(shutdown: object) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "metadata": {"name": "typed"},
            "spec": {
                "entrypoint": "python -c 'print(1)'",
                "shutdownAfterJobFinishes": shutdown,
                "rayClusterSpec": {
                    "headGroupSpec": {
                        "rayStartParams": {},
                        "template": {
                            "spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.52.0"}]}
                        },
                    }
                },
            },
        }
    )


def test_kuberay_crd_schema_rejects_a_wrong_field_type(cluster: LocalCluster, namespace: str) -> None:
    bad = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rayjob("yes"), check=False)
    assert bad.returncode != 0
    assert "spec.shutdownAfterJobFinishes" in bad.stderr
    assert "boolean" in bad.stderr
    good = cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=rayjob(True))
    assert "serverside-applied" in good.stdout


@pytest.mark.parametrize(
    "crd",
    [
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
        "scaledobjects.keda.sh",
        "rayclusters.ray.io",
    ],
)
def test_third_party_crds_are_established(cluster: LocalCluster, crd: str) -> None:
    out = json.loads(cluster.kubectl("get", "crd", crd, "-o", "json").stdout)
    assert any(c["type"] == "Established" and c["status"] == "True" for c in out["status"]["conditions"])


def test_helm_installs_a_chart_and_waits_for_it(
    cluster: LocalCluster, namespace: str, tmp_path: Path, kube_env: dict
) -> None:
    chart = tmp_path / "throwaway"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: throwaway\nversion: 0.1.0\nkubeVersion: '>=1.37.0-0'\n"
    )
    (chart / "templates" / "deployment.yaml").write_text(yaml.safe_dump(deployment("{{ .Release.Name }}", 1)))
    helm = binary("helm")
    subprocess.run(
        [helm, "install", "demo", str(chart), "-n", namespace, "--wait", "--timeout", "90s"],
        env=kube_env,
        check=True,
        capture_output=True,
        text=True,
    )
    releases = json.loads(
        subprocess.run(
            [helm, "list", "-n", namespace, "-o", "json"],
            env=kube_env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
    ready = cluster.kubectl(
        "get", "deployment", "demo", "-n", namespace, "-o", "jsonpath={.status.readyReplicas}"
    )
    assert ready.stdout == "1"


def llmops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmops.cli", *args], capture_output=True, text=True)


def test_dev_cli_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    state, kubeconfig = tmp_path / "state", tmp_path / "out" / "config"
    first = llmops("dev", "up", "--state-dir", str(state), "--kubeconfig", str(kubeconfig))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"export KUBECONFIG={kubeconfig}"
    try:
        pids = LocalCluster(state).processes()
        assert len(pids) == 5 and all(alive for _, alive in pids.values())

        second = llmops("dev", "up", "--state-dir", str(state))
        assert second.returncode == 0 and "already running" in second.stderr
        assert LocalCluster(state).processes() == pids  # no second cluster

        status = llmops("dev", "status", "--state-dir", str(state))
        assert status.returncode == 0 and "ready" in status.stdout
        env = llmops("dev", "env", "--state-dir", str(state))
        assert (
            env.returncode == 0 and env.stdout.splitlines()[0] == f"export KUBECONFIG={state / 'kubeconfig'}"
        )
        nodes = subprocess.run(
            [binary("kubectl"), "--kubeconfig", str(kubeconfig), "get", "nodes"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "kwok-gpu-0" in nodes and "Ready" in nodes
    finally:
        down = llmops("dev", "down", "--state-dir", str(state))
    assert down.returncode == 0
    assert not state.exists()
    assert not [name for name, (pid, _) in pids.items() if process_alive(pid, name)]
    assert llmops("dev", "status", "--state-dir", str(state)).returncode == 1
    env = llmops("dev", "env", "--state-dir", str(state))  # an eval that fails, and says why
    assert (
        env.returncode == 1
        and env.stdout == "false\n"
        and f"`llmops dev up --state-dir {state}`" in env.stderr
    )
