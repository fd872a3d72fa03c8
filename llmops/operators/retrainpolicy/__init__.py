"""The RetrainPolicy kind: triggers start TrainingJobs; a winner goes out by moving registry aliases.

The rooms (every kind has the same, plus the families of this one):

| module          | what                                                                         |
|-----------------|------------------------------------------------------------------------------|
| `reconcile.py`  | the only I/O: the target, the runs, the aliases, Prometheus, storage; acts   |
| `triggers.py`   | pure: each trigger's evaluation (cron times, held conditions, new data)      |
| `plan.py`       | pure: can it serve the target; which run starts now; pruning                 |
| `promotion.py`  | pure: a run judged against the champion; the challenger/champion steps      |
| `builders.py`   | pure: a run's TrainingJob                                                    |
| `fold.py`       | pure: runs read back from TrainingJobs; found -> phase, conditions, status   |
| `names.py`      | pure: run names, labels, annotations, alias move ids                         |
"""

from __future__ import annotations

from typing import Any

from llmops.api import RETRAIN_POLICY
from llmops.api.retrainpolicy import EventReason
from llmops.operators.auditing import Subject
from llmops.operators.events import Announcements
from llmops.operators.retrainpolicy.reconcile import Reconciler
from llmops.operators.runtime import Child, Kind


def run_fingerprint(child: dict) -> Any:
    """What of a run matters to its policy: its phase and the version it registered."""
    status = child.get("status") or {}
    return (status.get("phase"), (status.get("modelVersion") or {}).get("version"))


def audit_subject(body: dict) -> Subject:
    """The model a policy retrains (its template's output) and the champion version it knows."""
    template = ((body.get("spec") or {}).get("trainingJobTemplate") or {}).get("spec") or {}
    return Subject(
        model=(template.get("output") or {}).get("modelName"),
        version=(body.get("status") or {}).get("championVersion"),
    )


def make_kind(reconciler: Reconciler | None = None) -> Kind:
    return Kind(
        RETRAIN_POLICY,
        reconciler or Reconciler(),
        children=(Child("llmops.io", "v1alpha1", "trainingjobs", fingerprint=run_fingerprint),),
        # Stalled reasons get a Warning once; the policy posts its own domain Events (a run started,
        # an alias moved, a version promoted or rolled back).
        announcements=Announcements(own=frozenset({EventReason.ROLLED_BACK})),
        audit_subject=audit_subject,
    )


KIND = make_kind()
