"""Issue 17, point 7: every pod the operators create meets the `restricted` Pod Security Standard.

The checker is the real kube-apiserver's built-in PodSecurity admission (enabled by default), not
our reading of the standard: each pod template of each workload the builders make (every
ModelDeployment golden case, every TrainingJob example as a RayJob: tests/unit/operators/workloads.py)
is sent as a Pod, server-side dry run, into a namespace labelled
`pod-security.kubernetes.io/enforce=restricted`. Admission refuses a pod that falls short with 403
and names every failed check; nothing is stored.

The chain itself runs under the same label: the `namespace` fixture (tests/conftest.py) labels every
namespace the cluster tests make `restricted`, so the Deployments the real operator applies there get
their pods from the ReplicaSet controller only if admission lets them through (a refused pod is a
FailedCreate event on its ReplicaSet and a Deployment that never becomes available, so their readiness
waits fail). The second test here is the negative control: such a refusal is seen, with its message.

RayJob pods are made by KubeRay, which does not run here: its head, worker and submitter pods are our
templates plus the command, ports and environment KubeRay adds, none of which touches the fields the
standard checks (KubeRay's autoscaler sidecar would, but the builders never enable it).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from kubernetes import client

from llmops.dev.cluster import LocalCluster
from tests.helpers import create_namespace, eventually, pod_security_refusals
from tests.unit.operators.workloads import every_pod

pytestmark = [pytest.mark.cluster]

ENFORCE = "pod-security.kubernetes.io/enforce"


def _pod(index: int, template: dict[str, Any]) -> dict[str, Any]:
    meta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"probe-{index}", "labels": meta.get("labels", {})},
        "spec": template["spec"],
    }


# The pods that cannot meet `restricted`, why (said where they are built), and what admission says.
EXCEPTIONS = {
    # llmops/operators/modeldeployment/vllm.py: a `local` registry (development clusters) is a hostPath
    # volume, which `restricted` and `baseline` both refuse; an S3 registry has none.
    "single+local-registry: Deployment/support-bot-3-vllm Deployment": (
        'restricted volume types (volume "registry" uses restricted volume type "hostPath")'
    ),
}


def test_every_pod_the_operators_build_is_admitted_under_restricted(api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    labels = core.read_namespace(namespace).metadata.labels
    assert labels.get(ENFORCE) == "restricted", labels
    pods = list(every_pod())
    # The ServiceAccounts the pods name (a TrainingJob's runtime.serviceAccountName), as users make them.
    for account in {t["spec"]["serviceAccountName"] for _, _, t in pods if "serviceAccountName" in t["spec"]}:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    checked: Counter[str] = Counter()
    refused: dict[str, str] = {}
    for index, (kind, what, template) in enumerate(pods):
        try:
            core.create_namespaced_pod(namespace, _pod(index, template), dry_run="All")
        except client.ApiException as e:
            refused[what] = f"{e.status} {json.loads(e.body).get('message')}"
        checked[kind] += 1
    for kind, count in sorted(checked.items()):
        print(f"pod security: {count} pods of {kind} children checked under restricted")
    print(
        f"pod security: {sum(checked.values())} pods checked, {len(refused)} refused"
        f" ({len(EXCEPTIONS)} known exception: {', '.join(EXCEPTIONS)})"
    )
    assert set(checked) == {"ModelDeployment", "TrainingJob"}, checked
    assert set(refused) == set(EXCEPTIONS), "\n".join(f"{what}: {why}" for what, why in refused.items())
    for what, why in EXCEPTIONS.items():
        assert "403" in refused[what] and why in refused[what], refused[what]


def test_a_refused_pod_is_seen_not_silent(cluster: LocalCluster, api_client: Any) -> None:
    """The negative control: a Deployment whose pod breaks the standard, in the same kind of namespace,
    gets no pod and a FailedCreate event naming the check, which `pod_security_refusals` finds: the
    `namespace` fixture fails every cluster test that leaves one behind (so this test makes its own
    namespace), besides the readiness waits that would time out."""
    namespace = f"t-psa-{uuid.uuid4().hex[:8]}"
    create_namespace(cluster, namespace)
    try:
        _refused_deployment(api_client, namespace)
        assert pod_security_refusals(cluster, namespace)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _refused_deployment(api_client: Any, namespace: str) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    labels = {"app": "root"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "root"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "main", "image": "registry.example/app:1"}]},
                },
            },
        },
    )

    def failed_create() -> list[str]:
        events = core.list_namespaced_event(namespace).items
        return [e.message for e in events if e.reason == "FailedCreate"]

    messages = eventually(failed_create, 60)
    print(f"pod security: a non-compliant Deployment gets FailedCreate: {messages[0]}")
    assert "violates PodSecurity" in messages[0] and '"restricted:latest"' in messages[0], messages
    assert not core.list_namespaced_pod(namespace).items
