"""ModelDeployment operator: thin kopf handlers over the shared runtime.

Serving (vLLM, the gateway, autoscaling, canary) is the ModelDeployment issue's work; until it
lands, a valid ModelDeployment is accepted and waits, with a status that says so.
"""

from __future__ import annotations

from llmops.api import MODEL_DEPLOYMENT
from llmops.api.modeldeployment import ModelDeploymentSpec
from operators.runtime import Context, Kind, Outcome


def reconcile(spec: ModelDeploymentSpec, ctx: Context) -> Outcome:
    ref = spec.model.version or f"alias {spec.model.alias}"
    return Outcome(
        "reconciling",
        "Pending",
        "WaitingForServing",
        f"accepted; serving {spec.model.name} ({ref}) is not started by this version",
    )


KIND = Kind(MODEL_DEPLOYMENT, reconcile)
