"""Reading a ModelDeployment's child Deployments: what they want, what is ready, whether rolled out.

Pure functions over Deployments as the API returns them (dicts); the counterpart of
llmops/operators/trainingjob/fold.observe_rayjob. A missing Deployment (None) counts as nothing ready.
"""

from __future__ import annotations

from typing import NamedTuple


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


# The status fields of a Deployment that the readers above (and the fold's) read.
_STATUS_FIELDS = ("observedGeneration", "replicas", "readyReplicas", "availableReplicas", "updatedReplicas")


class DeploymentView(NamedTuple):
    """What the parent reads of a child Deployment, kept per Deployment by the operator
    (operators.views.ChildViews) in place of reading it again: about 120 bytes against a GET's whole object.
    A field the Deployment did not have is None, and absent again from `body()`."""

    uid: str
    generation: int
    replicas: int | None  # spec.replicas
    status: tuple[int | None, ...]  # _STATUS_FIELDS, in order; () when the Deployment had no status

    @classmethod
    def of(cls, deployment: dict) -> DeploymentView:
        meta = deployment.get("metadata") or {}
        status = deployment.get("status") or {}
        return cls(
            uid=meta.get("uid") or "",
            generation=int(meta.get("generation") or 0),
            replicas=(deployment.get("spec") or {}).get("replicas"),
            status=tuple(status.get(f) for f in _STATUS_FIELDS) if status else (),
        )

    def body(self) -> dict:
        """A slim Deployment that every reader here reads as it reads the whole one."""
        status = {f: v for f, v in zip(_STATUS_FIELDS, self.status, strict=False) if v is not None}
        if self.status and not status:
            status = {"observedGeneration": 0}  # a status that was there but held none of these
        spec = {} if self.replicas is None else {"replicas": self.replicas}
        meta = {"uid": self.uid, **({"generation": self.generation} if self.generation else {})}
        return {"metadata": meta, "spec": spec, "status": status}
