"""The TrainingJob kind: train on Ray, evaluate, register a model version. Its declaration only.

The rooms (every kind has the same):

| module           | what                                                                     |
|------------------|--------------------------------------------------------------------------|
| `reconcile.py`   | the only I/O: read the RayJob or Ray job and the report, act, fold        |
| `plan.py`        | pure: which run, and the next step on the Ray Jobs API                    |
| `builders.py`    | pure: the run, its entrypoint and the KubeRay RayJob                      |
| `fold.py`        | pure: runtime status + run report -> phase, conditions, status fields     |
| `names.py`       | pure: names, submission ids and labels of what a TrainingJob makes        |
| `rayjobs_api.py` | the Ray Jobs API client (imports `ray` only when a job asks for it)       |
"""

from __future__ import annotations

from typing import Any

from llmops.api import TRAINING_JOB
from llmops.api.common import Status
from llmops.operators.auditing import Subject
from llmops.operators.events import Announcements, Transition
from llmops.operators.runtime import Child, Kind
from llmops.operators.trainingjob import fold, reconcile

# The Event (and audit record) of the version a run registered. (Beside the kind's other Event
# reasons in llmops/api/trainingjob.py EventReason once issue 15 lands there.)
VERSION_REGISTERED = "VersionRegistered"


def audit_subject(body: dict) -> Subject:
    """The model a TrainingJob trains, the version it registered and its training data's digest."""
    status = body.get("status") or {}
    registered = status.get("modelVersion") or {}
    digest = (status.get("lineage") or {}).get("dataDigest")
    return Subject(
        model=registered.get("name") or ((body.get("spec") or {}).get("output") or {}).get("modelName"),
        version=registered.get("version"),
        digests={"data": digest.removeprefix("sha256:")} if digest else {},
    )


def registrations(before: Status, after: dict[str, Any]) -> list[Transition]:
    """A VersionRegistered Event when the status first names the version the run registered."""
    registered = after.get("modelVersion") or {}
    if not registered.get("version") or getattr(before, "model_version", None) is not None:
        return []
    name, version = registered["name"], registered["version"]
    message = f"registered {name}:{version} at {registered.get('uri', '')}"[:1024]
    return [(VERSION_REGISTERED, message, False, {"model": name, "version": version})]


KIND = Kind(
    TRAINING_JOB,
    reconcile.reconcile,
    children=(Child("ray.io", "v1", "rayjobs", fingerprint=fold.rayjob_fingerprint),),
    finalize=reconcile.finalize,
    finalize_when=reconcile.needs_cleanup,
    announcements=Announcements(
        phases=fold.PHASE_EVENTS, stalled_reason=fold.warning_reason, transitions=registrations
    ),
    audit_subject=audit_subject,
)
