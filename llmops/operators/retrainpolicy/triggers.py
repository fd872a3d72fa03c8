"""A RetrainPolicy's triggers: pure. The reconcile reads the facts (the clock, Prometheus, a storage
listing, the policy's annotations) and these functions say which trigger fires and what status says.

    schedule  cron times since the last scheduled run: the most recent one starts (if it is
              within startingDeadlineSeconds)
    drift     max(llmops_drift_score) of the deployment above threshold for forSeconds
    quality   the PromQL expression outside [min, max] for forSeconds
    feedback  negative share of increase(llmops_gateway_feedback_total[window]) above
              maxNegativeRatio, with at least minCount feedbacks
    newData   at least minNewObjects keys sort after the newest key the last run recorded
    manual    annotation retrain.llmops.io/requested holds a value no run answered yet

"For a duration" is held like a Prometheus alert's `for`: the first evaluation that finds the
condition true records `pendingSince` in status; it fires once the condition held that long at every
evaluation since (a false or unreadable evaluation resets it).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field

from croniter import croniter

from llmops.api.retrainpolicy import (
    DriftTrigger,
    FeedbackTrigger,
    QualityTrigger,
    ScheduleTrigger,
    TriggerStatus,
)
from llmops.operators.modeldeployment import monitoring
from llmops.operators.retrainpolicy import names

# CronJob warns past this many missed times (pkg/controller/cronjob/utils.go) and still runs the last.
TOO_MANY_MISSED = 100
# Triggers in the order they win when several fire at once; cooldownSeconds applies to EVENT ones.
ORDER = ("manual", "schedule", "drift", "quality", "feedback", "newData")
EVENT = frozenset({"drift", "quality", "feedback", "newData"})


@dataclass(frozen=True)
class Firing:
    """A trigger that asks for a run: which, when (the run's name comes from `at`), and why."""

    type: str
    at: dt.datetime
    value: str
    message: str
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.type.split("/", 1)[0]

    def run_name(self, policy: str) -> str:
        """The name of the run this firing starts (names.run_name; a manual request by its value)."""
        return names.run_name(policy, self.at, self.value if self.family == "manual" else None)


# -- schedule ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleCheck:
    due: dt.datetime | None  # the most recent cron time since `last`, if it may still start
    missed: int  # cron times since `last` (capped at TOO_MANY_MISSED + 1)
    next: dt.datetime  # the next cron time after now
    late: dt.datetime | None = None  # a due time skipped for passing startingDeadlineSeconds


def schedule(trigger: ScheduleTrigger, last: dt.datetime, now: dt.datetime) -> ScheduleCheck:
    """What the schedule asks for at `now`, when `last` is the last scheduled time a run started for
    (or the policy's creation). Times are aware datetimes; the cron is read in trigger.timeZone."""
    zone = zoneinfo.ZoneInfo(trigger.time_zone)
    local_now = now.astimezone(zone)
    following = croniter(trigger.cron, local_now).get_next(dt.datetime)
    # Walk forward from `last` (croniter yields a repeated DST hour's time twice, as CronJob runs it);
    # past the cap, the most recent time comes from walking back from now.
    missed, latest, it = 0, None, croniter(trigger.cron, last.astimezone(zone))
    while missed <= TOO_MANY_MISSED:
        # Compared in UTC: Python compares two times of one zone by wall clock, ignoring `fold`.
        candidate = it.get_next(dt.datetime).astimezone(dt.UTC)
        if candidate > now:
            break
        missed, latest = missed + 1, candidate
    if missed > TOO_MANY_MISSED:
        latest = croniter(trigger.cron, local_now + dt.timedelta(seconds=1)).get_prev(dt.datetime)
        latest = latest.astimezone(dt.UTC)
    if latest is None:
        return ScheduleCheck(None, 0, following.astimezone(dt.UTC))
    deadline = trigger.starting_deadline_seconds
    if deadline is not None and (now - latest).total_seconds() > deadline:
        return ScheduleCheck(None, missed, following.astimezone(dt.UTC), late=latest)
    return ScheduleCheck(latest, missed, following.astimezone(dt.UTC))


# -- Prometheus triggers -----------------------------------------------------------------------


def drift_query(namespace: str, deployment: str) -> str:
    return f"max({monitoring.DRIFT}{monitoring.selector(namespace, deployment)})"


def feedback_queries(
    namespace: str, deployment: str, trigger: FeedbackTrigger, version: str | None = None
) -> tuple[str, str]:
    """(all feedback, negative feedback) of `trigger.name` over its window, as PromQL; of `version`
    only when given (the champion: ratings of a version already replaced must not start runs)."""
    window = f"[{trigger.window_seconds}s]"
    matchers = [f'name="{trigger.name}"', *([f'version="{version}"'] if version else [])]
    every = monitoring.selector(namespace, deployment, *matchers)
    negative = monitoring.selector(namespace, deployment, *matchers, 'sentiment="negative"')
    return (
        f"sum(increase({monitoring.FEEDBACK}{every}{window}))",
        f"sum(increase({monitoring.FEEDBACK}{negative}{window})) or vector(0)",
    )


def held(
    type: str,
    holds: bool | None,
    value: float | None,
    for_seconds: int,
    before: TriggerStatus | None,
    now: dt.datetime,
    message: str,
) -> TriggerStatus:
    """A condition that must hold `for_seconds` (drift, quality). `holds` None: no data (resets)."""
    since = (before.pending_since if before and before.pending_since else now) if holds else None
    firing = since is not None and (now - since).total_seconds() >= for_seconds
    if since is not None and not firing:
        message += f"; for {int((now - since).total_seconds())} s of {for_seconds} s"
    return TriggerStatus(
        type=type,
        firing=firing,
        value=value,
        message=message[:256],
        last_evaluation_time=now,
        pending_since=since,
        last_fired_time=before.last_fired_time if before else None,
    )


def drift(
    trigger: DriftTrigger, score: float | None, before: TriggerStatus | None, now: dt.datetime
) -> TriggerStatus:
    if score is None:
        return held("drift", None, None, trigger.for_seconds, before, now, "no drift score in Prometheus")
    holds = score > trigger.threshold
    word = "above" if holds else "at or below"
    message = f"drift score {score:.3f} {word} {trigger.threshold:g}"
    return held("drift", holds, score, trigger.for_seconds, before, now, message)


def quality(
    trigger: QualityTrigger, value: float | None, before: TriggerStatus | None, now: dt.datetime
) -> TriggerStatus:
    type = f"quality/{trigger.name}"
    if value is None:
        return held(type, None, None, trigger.for_seconds, before, now, "the query returned no sample")
    low = trigger.min is not None and value < trigger.min
    high = trigger.max is not None and value > trigger.max
    if low:
        message = f"{value:g} below min {trigger.min:g}"
    elif high:
        message = f"{value:g} above max {trigger.max:g}"
    else:
        message = f"{value:g} in range"
    return held(type, low or high, value, trigger.for_seconds, before, now, message)


def feedback(
    trigger: FeedbackTrigger,
    count: float | None,
    negative: float | None,
    before: TriggerStatus | None,
    now: dt.datetime,
) -> TriggerStatus:
    """The negative share of `trigger.name` feedback over the window (counts from increase(): they
    may be fractional, Prometheus extrapolates to the window's edges)."""
    count, negative = count or 0.0, negative or 0.0
    ratio = negative / count if count > 0 else None
    window = f"{trigger.window_seconds} s"
    if count < trigger.min_count:
        message = f"{count:.0f} {trigger.name} feedbacks in {window}, fewer than minCount {trigger.min_count}"
        firing = False
    else:
        assert ratio is not None
        firing = ratio > trigger.max_negative_ratio
        word = "above" if firing else "at or below"
        message = (
            f"negative share {ratio:.3f} of {count:.0f} {trigger.name} feedbacks in {window},"
            f" {word} {trigger.max_negative_ratio:g}"
        )
    return TriggerStatus(
        type="feedback",
        firing=firing,
        value=ratio,
        message=message[:256],
        last_evaluation_time=now,
        last_fired_time=before.last_fired_time if before else None,
    )


# -- new data and manual requests --------------------------------------------------------------


def new_data(
    keys: Iterable[str], marker: str | None, minimum: int, before: TriggerStatus | None, now: dt.datetime
) -> tuple[TriggerStatus, str | None]:
    """Keys that sort after `marker` (the newest key the last run saw; None: every key is new), and the
    newest key now. Date-partitioned and time-stamped names (object-store sinks, the gateway's sampler)
    sort in arrival order, which is what makes "after" mean "new"."""
    fresh = [k for k in keys if marker is None or k > marker]
    newest = max(fresh, default=marker)
    firing = len(fresh) >= minimum
    message = f"{len(fresh)} new objects since {'the last run' if marker else 'the start'} (need {minimum})"
    status = TriggerStatus(
        type="newData",
        firing=firing,
        value=float(len(fresh)),
        message=message,
        last_evaluation_time=now,
        last_fired_time=before.last_fired_time if before else None,
    )
    return status, newest


def error(type: str, message: str, before: TriggerStatus | None, now: dt.datetime) -> TriggerStatus:
    """A trigger that could not be read (Prometheus or storage away): not firing; says why."""
    return TriggerStatus(
        type=type,
        firing=False,
        message=message[:256],
        last_evaluation_time=now,
        last_fired_time=before.last_fired_time if before else None,
    )


def fired(status: TriggerStatus, now: dt.datetime) -> TriggerStatus:
    """`status` after it started a run: a held condition starts counting again."""
    return status.model_copy(update={"last_fired_time": now, "pending_since": None, "firing": False})
