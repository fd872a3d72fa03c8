"""TrainingJob operator: thin kopf handlers over the shared runtime.

The training runtime (KubeRay RayJob or the Ray Jobs API) is the TrainingJob issue's work;
until it lands, a valid TrainingJob is accepted and waits, with a status that says so.
"""

from __future__ import annotations

from llmops.api import TRAINING_JOB
from llmops.api.trainingjob import TrainingJobSpec
from operators.runtime import Context, Kind, Outcome


def reconcile(spec: TrainingJobSpec, ctx: Context) -> Outcome:
    if spec.suspend:
        return Outcome("reconciling", "Suspended", "Suspended", "spec.suspend is true; nothing runs")
    return Outcome(
        "reconciling",
        "Pending",
        "WaitingForRuntime",
        f"accepted; {spec.method.type} training on {spec.runtime.type} is not started by this version",
    )


KIND = Kind(TRAINING_JOB, reconcile)
