"""Names, labels and annotations of what a RetrainPolicy makes. Pure and deterministic, so a restarted
operator finds what it made and one trigger never makes two runs.

    a run's TrainingJob   <policy>-<minutes since the epoch of the trigger time> (CronJob's rule);
                          a manual request's: <policy>-m<8 hex of the request's sha256>
    its labels            operators.manifests.labels_for(policy): llmops.io/retrainpolicy=<policy>
    its annotations       retrain.llmops.io/ trigger, trigger-value, scheduled-time, manual, data-marker
    alias move ids        <namespace>.<run>.<step>: a repeated step moves nothing twice
"""

from __future__ import annotations

import datetime as dt
import hashlib

POLICY_LABEL = "llmops.io/retrainpolicy"
PREFIX = "retrain.llmops.io/"
TRIGGER = PREFIX + "trigger"  # schedule, drift, feedback, newData, manual, quality/<name>
TRIGGER_VALUE = PREFIX + "trigger-value"  # the value that fired it, as text
SCHEDULED_TIME = PREFIX + "scheduled-time"  # schedule: the cron time this run is for (RFC 3339)
MANUAL = PREFIX + "manual"  # manual: the value of retrain.llmops.io/requested it answers
DATA_MARKER = PREFIX + "data-marker"  # newData: the newest object key seen when the run started


def run_name(policy: str, at: dt.datetime, request: str | None = None) -> str:
    """`<policy>-<minutes since the epoch>`: the same trigger time always gives the same name. A manual
    request is named by its value instead (`<policy>-m<8 hex of its sha256>`), so two requests in one
    minute are two runs, and one request is one run."""
    if request is not None:
        return f"{policy}-m{hashlib.sha256(request.encode()).hexdigest()[:8]}"
    return f"{policy}-{int(at.timestamp()) // 60}"


def move_id(namespace: str, run: str, step: str) -> str:
    """The idempotency key of an alias move made for `run` (llmops.registry.move_alias)."""
    return f"{namespace}.{run}.{step}"
