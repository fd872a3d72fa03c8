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

from llmops.api import MODEL_DEPLOYMENT
from llmops.api.modeldeployment import Reason
from llmops.operators.events import Announcements
from llmops.operators.modeldeployment import canary
from llmops.operators.modeldeployment.observe import deployment_fingerprint
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modeldeployment.reconcile import Reconciler
from llmops.operators.runtime import Child, Kind, existence

# Every kind of child the builders make: a deleted one is put back at once, not at the
# next resync. Deployments also report their readiness; the others only their deletion.
CHILDREN = (
    Child("apps", "v1", "deployments", fingerprint=deployment_fingerprint),
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


def make_kind(settings: ServingSettings | None = None, metrics: canary.MetricsSource | None = None) -> Kind:
    reconciler = Reconciler(settings, metrics)
    return Kind(
        MODEL_DEPLOYMENT,
        reconciler,
        children=CHILDREN,
        child_deleted=reconciler.forget,
        # A Warning once per new stalled reason; a Normal `Suspended` when spec.suspend takes effect (the
        # reconcile posts `Resumed` when it is lifted); no other phase Events: the canary posts its own
        # steps, its rollback and its failed analysis included.
        announcements=Announcements(
            phases={"Suspended": "Suspended"},
            own=frozenset({Reason.ROLLED_BACK, Reason.ANALYSIS_FAILED}),
        ),
    )


KIND = make_kind()
