"""The ModelDeployment kind: what the runtime needs to run it (`KIND`, for operators.main).

Where things are:

    reconcile.py   the reconcile (the only I/O): resolve versions, apply children, canary step, prune
    fold.py        pure: what the reconcile found -> phase, conditions, status
    observe.py     pure: reading child Deployments (rolled out, ready replicas, fingerprint)
    versions.py    pure: which registered versions may be served where (gates, model or adapter)
    plan.py        the plan the builders render (served versions, adapters) and the operator settings
    builders.py    pure: plan -> child manifests (the child table; one module per child family)
    canary.py      pure: the canary's analysis and step machine
    names.py       names, labels and selectors of the children
"""

from __future__ import annotations

from typing import Any

from llmops.api import MODEL_DEPLOYMENT
from llmops.api.common import Status
from llmops.api.modeldeployment import Reason
from llmops.operators.auditing import Subject
from llmops.operators.events import Announcements, Transition
from llmops.operators.modeldeployment import canary
from llmops.operators.modeldeployment.observe import deployment_fingerprint
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modeldeployment.reconcile import Reconciler
from llmops.operators.runtime import Child, Kind, existence

# Every kind of child the builders make but Deployments (make_kind): a deleted one is put back at once,
# not at the next resync. Deployments also report their readiness; the others only their deletion.
OTHER_CHILDREN = (
    *(
        Child(group, version, plural, fingerprint=existence)
        for group, version, plural in (
            ("", "v1", "services"),
            ("", "v1", "configmaps"),
            ("autoscaling", "v2", "horizontalpodautoscalers"),
            ("keda.sh", "v1alpha1", "scaledobjects"),
            ("policy", "v1", "poddisruptionbudgets"),
            ("networking.k8s.io", "v1", "networkpolicies"),
            ("monitoring.coreos.com", "v1", "podmonitors"),
            ("monitoring.coreos.com", "v1", "servicemonitors"),
            ("monitoring.coreos.com", "v1", "prometheusrules"),
        )
    ),
)


# The Events (and audit records) of where and when a version serves. (Beside the kind's other Event
# reasons in llmops/api/modeldeployment.py once issue 15 lands there.)
ROLLED_OUT = "RolledOut"  # a version starts to receive traffic
SERVING_STOPPED = "ServingStopped"  # a version receives traffic no more


def _serving(versions: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, int]]:
    found = {(v["name"], v["version"]): (v.get("role", ""), v.get("weight", 0)) for v in versions}
    return {key: (role, weight) for key, (role, weight) in found.items() if weight}


def serving_changes(before: Status, after: dict[str, Any]) -> list[Transition]:
    """RolledOut for each version that receives traffic now and did not before, ServingStopped for
    each that did and does not now (by status.versions[].weight). Pure."""
    was = _serving([v.model_dump(by_alias=True) for v in getattr(before, "versions", None) or []])
    now = _serving(after.get("versions") or [])
    said: list[Transition] = []
    for (name, version), (role, weight) in now.items():
        if (name, version) not in was:
            message = f"{name}:{version} serves {weight}% of requests as {role}"
            said.append((ROLLED_OUT, message, False, {"model": name, "version": version}))
    for name, version in was.keys() - now.keys():
        message = f"{name}:{version} receives no more requests"
        said.append((SERVING_STOPPED, message, False, {"model": name, "version": version}))
    return said


def audit_subject(body: dict) -> Subject:
    """The model a ModelDeployment serves and its stable version (else the first one serving)."""
    versions = (body.get("status") or {}).get("versions") or []
    serving = next((v for v in versions if v.get("role") == "stable"), versions[0] if versions else {})
    model = serving.get("name") or ((body.get("spec") or {}).get("model") or {}).get("name")
    return Subject(model=model, version=serving.get("version"))


def make_kind(settings: ServingSettings | None = None, metrics: canary.MetricsSource | None = None) -> Kind:
    reconciler = Reconciler(settings, metrics)
    # The reconcile reads its unchanged Deployments from the views this watch keeps (reconcile.py).
    deployments = Child(
        "apps", "v1", "deployments", fingerprint=deployment_fingerprint, views=reconciler.deployments
    )
    return Kind(
        MODEL_DEPLOYMENT,
        reconciler,
        children=(deployments, *OTHER_CHILDREN),
        child_deleted=reconciler.forget,
        # A Warning once per new stalled reason; a Normal `Suspended` when spec.suspend takes effect (the
        # reconcile posts `Resumed` when it is lifted); no other phase Events: the canary posts its own
        # steps, its rollback and its failed analysis included. The serving versions' changes:
        # RolledOut, ServingStopped.
        announcements=Announcements(
            phases={"Suspended": "Suspended"},
            own=frozenset({Reason.ROLLED_BACK, Reason.ANALYSIS_FAILED}),
            transitions=serving_changes,
        ),
        audit_subject=audit_subject,
    )


KIND = make_kind()
