"""Reading a ModelDeployment's child Deployments: what they want, what is ready, whether rolled out.

Pure functions over Deployments as the API returns them (dicts); the counterpart of
llmops/operators/trainingjob/fold.observe_rayjob. A missing Deployment (None) counts as nothing ready.
"""

from __future__ import annotations


def desired_replicas(deployment: dict) -> int:
    """`spec.replicas`, 1 when unset (the apiserver's default)."""
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def rolled_out(deployment: dict | None) -> bool:
    """The Deployment runs its current template with all the replicas it wants available."""
    if not deployment:
        return False
    status = deployment.get("status") or {}
    want = desired_replicas(deployment)
    return (
        status.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 1)
        and (status.get("updatedReplicas") or 0) >= want
        and (status.get("availableReplicas") or 0) >= want
    )


def available_replicas(deployment: dict | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("availableReplicas") or 0)


def ready_replicas(deployment: dict | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


def deployment_fingerprint(deployment: dict) -> tuple:
    """What of a child Deployment the parent's status depends on (no poke for other changes)."""
    status = deployment.get("status") or {}
    return (
        desired_replicas(deployment),
        status.get("readyReplicas") or 0,
        status.get("availableReplicas") or 0,
        rolled_out(deployment) if status else False,
    )
