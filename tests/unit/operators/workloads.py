"""Every pod the operators ask for, from the real builders: the pod templates of each workload of
each builder case (the ModelDeployment golden cases, every TrainingJob example as a KubeRay RayJob).

RetrainPolicy's only child is a TrainingJob (the TrainingJob builders make its pods) and
ModelRetirement owns no children, so these two kinds add no pod of their own.

Shared by tests/unit/operators/test_workload_pods.py (tokens, security contexts, on the manifests) and
tests/reliability/test_pod_security.py (the apiserver's PodSecurity admission, on the same pods).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.unit.operators.modeldeployment import cases as md_cases
from tests.unit.operators.trainingjob import support as tj_support

TRAININGJOB_EXAMPLES = ("pretrain", "full", "lora", "qlora")


def pod_templates(manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, pod template) of every pod `manifest` makes: a Deployment's, StatefulSet's, DaemonSet's
    or Job's `spec.template`, a CronJob's job template's, and a RayJob's head, worker groups and
    submitter. Nothing for a kind without pods."""
    kind, spec = manifest["kind"], manifest.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield kind, spec["template"]
    elif kind == "CronJob":
        yield kind, spec["jobTemplate"]["spec"]["template"]
    elif kind == "RayJob":
        cluster = spec["rayClusterSpec"]
        yield "RayJob head", cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"RayJob worker group {group['groupName']}", group["template"]
        if "submitterPodTemplate" in spec:
            yield "RayJob submitter", spec["submitterPodTemplate"]
    else:
        assert "template" not in spec, f"{kind} has a pod template this list does not know"


def every_workload() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(operator kind, case, child manifest) of every child with pods the builders make."""
    for case in md_cases.CASES:
        for manifest in md_cases.objects(case).values():
            if any(pod_templates(manifest)):
                yield "ModelDeployment", case, manifest
    for name in TRAININGJOB_EXAMPLES:
        manifest = tj_support.build(tj_support.kuberay(tj_support.spec_of(name)))
        yield "TrainingJob", name, manifest


def every_pod() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(operator kind, "case: child kind/name role", pod template) of every pod of `every_workload`."""
    for kind, case, manifest in every_workload():
        for role, template in pod_templates(manifest):
            yield kind, f"{case}: {manifest['kind']}/{manifest['metadata']['name']} {role}", template
