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

from llmops.api import TRAINING_JOB
from llmops.operators.events import Announcements
from llmops.operators.runtime import Child, Kind
from llmops.operators.trainingjob import fold, reconcile

KIND = Kind(
    TRAINING_JOB,
    reconcile.reconcile,
    children=(Child("ray.io", "v1", "rayjobs", fingerprint=fold.rayjob_fingerprint),),
    finalize=reconcile.finalize,
    finalize_when=reconcile.needs_cleanup,
    announcements=Announcements(phases=fold.PHASE_EVENTS, stalled_reason=fold.warning_reason),
)
