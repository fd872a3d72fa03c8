"""The ModelRetirement kind: a model version's end of life in ordered, restartable steps.

The rooms (every kind has the same, plus the families of this one):

| module          | what                                                                          |
|-----------------|-------------------------------------------------------------------------------|
| `reconcile.py`  | the only I/O: the registry, the archive, the ModelDeployments, Prometheus     |
| `plan.py`       | pure: the next step; what the drain does to each ModelDeployment serving it   |
| `postmortem.py` | the post-mortem: figures from Prometheus, Markdown, JSON and charts           |
| `fold.py`       | pure: steps -> phase, conditions and status                                   |
| `names.py`      | pure: archive and report locations, field manager, queries                    |

It owns no children: the ModelDeployments it drains belong to their users, and it reconciles again
on a timer while it waits on them.
"""

from __future__ import annotations

from llmops.api import MODEL_RETIREMENT
from llmops.api.modelretirement import Reason
from llmops.operators.auditing import Subject
from llmops.operators.events import Announcements
from llmops.operators.modelretirement.reconcile import Reconciler
from llmops.operators.runtime import Kind


def audit_subject(body: dict) -> Subject:
    """The model (and version, when one is named) a retirement concerns: its audit records' subject."""
    model = (body.get("spec") or {}).get("model") or {}
    return Subject(model=model.get("name"), version=model.get("version"))


def make_kind(reconciler: Reconciler | None = None) -> Kind:
    return Kind(
        MODEL_RETIREMENT,
        reconciler or Reconciler(),
        # A Warning once per new stalled reason, a Normal Event when approval is awaited and when the
        # version is retired; each step posts its own Event when it ends (reconcile.py).
        announcements=Announcements(
            phases={"AwaitingApproval": Reason.AWAITING_APPROVAL, "Retired": Reason.RETIRED}
        ),
        audit_subject=audit_subject,
    )


KIND = make_kind()
