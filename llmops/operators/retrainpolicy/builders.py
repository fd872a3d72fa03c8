"""A run's TrainingJob: pure. The template, named and labelled for the policy, owned by it, and told
which champion to measure itself against (spec.evaluation.baseline, pinned to a version)."""

from __future__ import annotations

from typing import Any

from llmops.api import API_VERSION, TRAINING_JOB
from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.api.retrainpolicy import RetrainPolicySpec
from llmops.api.trainingjob import DataSource, Evaluation, ServedTraffic
from llmops.operators.manifests import adopt
from llmops.operators.retrainpolicy import names
from llmops.operators.retrainpolicy.triggers import Firing


def training_job(
    policy: dict,
    spec: RetrainPolicySpec,
    firing: Firing,
    champion: str | None,
    traffic: ObjectStorageLocation | None = None,
) -> dict[str, Any]:
    """The TrainingJob manifest of the run `firing` starts.

    `champion`: the version the champion alias names now, or None (the first version: no baseline).
    `traffic`: where the deployment's gateway samples payloads, added as a `servedTraffic` source
    when spec.servedTraffic asks for it.
    """
    template = spec.training_job_template
    job = template.spec
    if spec.served_traffic is not None and traffic is not None:
        source = DataSource(
            served_traffic=ServedTraffic(
                location=traffic,
                feedback=spec.served_traffic.feedback,
                since_seconds=spec.served_traffic.since_seconds,
            )
        )
        data = job.data.model_copy(update={"sources": [*job.data.sources, source]})
        job = job.model_copy(update={"data": data})
    if champion is not None:
        baseline = ModelReference(name=job.output.model_name, version=champion)
        evaluation = (job.evaluation or Evaluation()).model_copy(update={"baseline": baseline})
        job = job.model_copy(update={"evaluation": evaluation})
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
