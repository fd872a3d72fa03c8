"""Names, ids and labels of what a TrainingJob makes: its RayJob (runtime kuberay) and its Ray Jobs API
submissions (runtime rayJobsAPI). Pure and deterministic, so a restarted operator finds what it made.

| thing                        | shape                                          | made by                 |
|------------------------------|------------------------------------------------|-------------------------|
| RayJob                       | `<name>-<5 of the uid>`, a DNS-1035 label <= 47 | `rayjob_name`           |
| first submission (per gen.)  | `llmops-<ns>-<name>-<8 of the uid>-g<generation>` | `submission_id`         |
| resumed submission           | that of the current generation (`-resumed` if taken) | `resumed_submission` |
| retried submission           | `<first>-retry<n>`                             | `retried_submission`    |
| Ray job metadata             | `llmops.io/trainingjob`, `llmops.io/uid`       | `submission_metadata`   |
| RayJob labels                | name, method, Kueue queue                      | `rayjob_labels`         |
| Ray pod labels               | managed-by, `llmops.io/trainingjob-uid`        | `pod_labels`            |
"""

from __future__ import annotations

import hashlib

from llmops.api.trainingjob import TrainingJobSpec
from llmops.operators.manifests import dns_label
from llmops.workload import JobIdentity

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
UID_METADATA = "llmops.io/uid"  # the Ray job metadata key a submission is found by (finalize, restarts)
RETRY_SUFFIX = "-retry"
# KubeRay refuses RayJob names over 47 characters (its RayCluster gets a 6-character suffix) and
# names that are not DNS-1035 labels (they must start with a letter).
MAX_RAYJOB_NAME = 47


def _dns_label(text: str) -> str:
    label = dns_label(text)
    return label if label[:1].isalpha() else f"tj-{label}".rstrip("-")


def rayjob_name(name: str, uid: str) -> str:
    """`<name>-<5 characters of the uid>`: one RayJob per TrainingJob object, stable across changes.

    A KubeRay-valid name (a DNS-1035 label of at most 47 characters) for any TrainingJob name.
    """
    suffix = uid.replace("-", "")[:5]
    return f"{_dns_label(name)[: MAX_RAYJOB_NAME - len(suffix) - 1].rstrip('-')}-{suffix}"


def submission_id(job: JobIdentity) -> str:
    """The Ray Jobs API submission id of a TrainingJob's run for one generation.

    Deterministic, so an operator that restarts between submitting and recording finds the job it
    submitted instead of submitting again. A new generation (say, resuming after a suspend) gets a
    new id, because a stopped Ray job cannot be started again under its old id.
    """
    base = f"llmops-{job.namespace}-{job.name}"
    if len(base) > 96:
        base = f"{base[:80]}-{hashlib.sha256(base.encode()).hexdigest()[:15]}"
    return f"{base}-{job.uid[:8]}-g{job.generation}"


def submission_metadata(job: JobIdentity) -> dict[str, str]:
    """Ray job metadata that ties a submission to its TrainingJob (found again by uid)."""
    return {"llmops.io/trainingjob": f"{job.namespace}/{job.name}", UID_METADATA: job.uid}


def attempt(submission: str) -> int:
    """How many retries came before `submission`: 0 for a first or resumed one, n for `-retry<n>`."""
    _, sep, number = submission.rpartition(RETRY_SUFFIX)
    return int(number) if sep and number.isdigit() else 0


def _first(submission: str) -> str:
    head, sep, number = submission.rpartition(RETRY_SUFFIX)
    return head if sep and number.isdigit() else submission


def retried_submission(submission: str) -> str:
    """The id of the next attempt after `submission` failed: `<first>-retry<n+1>`."""
    return f"{_first(submission)}{RETRY_SUFFIX}{attempt(submission) + 1}"


def resumed_submission(job: JobIdentity, stopped: str) -> str:
    """The id a run resumes under after `stopped` (a stopped Ray job cannot start again under its id)."""
    resumed = submission_id(job)
    return resumed if resumed != stopped else f"{stopped}-resumed"


def rayjob_labels(spec: TrainingJobSpec) -> dict[str, str]:
    """The RayJob's own labels (`llmops.operators.manifests.adopt` adds the owner's); Kueue reads
    the queue."""
    labels = {"app.kubernetes.io/name": "llmops-trainer", "llmops.io/method": spec.method.type}
    if spec.runtime.queue_name:
        labels[QUEUE_LABEL] = spec.runtime.queue_name
    return labels


def pod_labels(job: JobIdentity) -> dict[str, str]:
    """The labels of every Ray pod (head, workers, submitter) of a run."""
    return {"app.kubernetes.io/managed-by": "llmops", "llmops.io/trainingjob-uid": job.uid}
