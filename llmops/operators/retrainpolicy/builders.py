"""A run's TrainingJob: pure. The template, named and labelled for the policy, owned by it, and told
which champion to measure itself against (spec.evaluation.baseline, pinned to a version)."""

from __future__ import annotations

from typing import Any

from llmops.api import API_VERSION, TRAINING_JOB
from llmops.api.common import ModelReference
from llmops.api.retrainpolicy import RetrainPolicySpec
from llmops.operators.manifests import adopt
from llmops.operators.retrainpolicy import names
from llmops.operators.retrainpolicy.triggers import Firing


def training_job(
    policy: dict, spec: RetrainPolicySpec, firing: Firing, champion: str | None
) -> dict[str, Any]:
    """The TrainingJob manifest of the run `firing` starts.

    `champion`: the version the champion alias names now, or None (the first version: no baseline).
    """
    template = spec.training_job_template
    job = template.spec
    if champion is not None:
        baseline = ModelReference(name=job.output.model_name, version=champion)
        job = job.model_copy(update={"evaluation": job.evaluation.model_copy(update={"baseline": baseline})})
    annotations = {
        **template.metadata.annotations,
        names.TRIGGER: firing.type,
        names.TRIGGER_VALUE: firing.value[:256],
        **firing.annotations,
    }
    body = {
        "apiVersion": API_VERSION,
        "kind": TRAINING_JOB.kind,
        "metadata": {
            "name": firing.run_name(policy["metadata"]["name"]),
            "labels": dict(template.metadata.labels),
            "annotations": annotations,
        },
        "spec": job.to_dict(),
    }
    return adopt(body, policy)
