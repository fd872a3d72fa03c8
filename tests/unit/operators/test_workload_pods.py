"""Every pod the operators' builders ask for (tests/unit/operators/workloads.py: every ModelDeployment
golden case, every TrainingJob example as a RayJob), on the manifests (issue 17, points 7 and 9):

- no Kubernetes token: `automountServiceAccountToken: false` on each pod. None of them calls the
  Kubernetes API (the gateway reads its config from a mounted ConfigMap, vLLM and the fetcher talk to
  storage, the drift monitor to storage and Prometheus, Ray to itself); only the operator's own pod
  (the chart's serviceaccount.yaml) gets one.
- the `restricted` Pod Security Standard's fields, set by llmops/operators/manifests.py: non-root,
  seccomp RuntimeDefault, no privilege escalation, every capability dropped; a read-only root
  filesystem wherever the image allows (Ray writes into its own: session files under /tmp/ray and
  its install). tests/reliability/test_pod_security.py has the real apiserver judge the same pods.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.unit.operators.workloads import every_pod

PODS = list(every_pod())
# Containers whose image writes to its own root filesystem (llmops/operators/trainingjob/builders.py).
WRITABLE_ROOT = {"ray-head", "ray-worker", "ray-job-submitter"}  # Ray's session dir and runtime_env


def test_there_are_pods_of_both_kinds_with_them() -> None:
    kinds = Counter(kind for kind, _, _ in PODS)
    print(f"workload pods: {dict(kinds)}")
    assert set(kinds) == {"ModelDeployment", "TrainingJob"} and all(kinds.values())


@pytest.mark.parametrize(("kind", "what", "template"), PODS, ids=[what for _, what, _ in PODS])
def test_no_pod_gets_a_kubernetes_token(kind: str, what: str, template: dict) -> None:
    assert template["spec"].get("automountServiceAccountToken") is False, what


@pytest.mark.parametrize(("kind", "what", "template"), PODS, ids=[what for _, what, _ in PODS])
def test_every_container_meets_the_restricted_standard(kind: str, what: str, template: dict) -> None:
    pod = template["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert not context.get("privileged"), container["name"]
        if container["name"] not in WRITABLE_ROOT:
            assert context.get("readOnlyRootFilesystem") is True, container["name"]
