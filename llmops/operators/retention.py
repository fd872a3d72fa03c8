"""Retention: delete the data a ModelDeployment's gateway or a finished TrainingJob wrote once it is
older than the retention set for its store (docs/operations.md, Retention).

Stores and the objects each owns (keys relative to the location; nothing else is ever listed as
deletable, so a location shared with other writers loses only what this store wrote):

| store | location | keys it owns |
|---|---|---|
| payloadSamples | spec.gateway.payloadSampling.destination | `<date>/<HHMMSS>-<host>-payload-<seq>.jsonl` |
| feedback | the same destination | `<date>/<HHMMSS>-<host>-feedback-<seq>.jsonl` |
| driftSamples | the drift monitor's prompts (modeldeployment/drift.py) | `<date>/…-prompt-<seq>.jsonl` |
| workData | the TrainingJob work folder `jobs/<ns>/<name>/<uid>/` | all but train/, report.json, stages/ |
| checkpoints | the same work folder | `train/…` |

The retention of a store is the spec's `retentionDays` beside its location, else the namespace
default: the key `<store>Days` of the ConfigMap `llmops-retention` in the object's namespace (one
read per sweep; absent: no default, data is kept as before). An object is expired when it was
written (`written`: its storage time, S3 LastModified or a file's mtime; for the gateway's files the
time in the key if earlier) before now minus the retention.

A sweep runs from the owner's reconcile at most every `LLMOPS_RETENTION_SWEEP_SECONDS` (3600) per
object, sooner (60 s) while the last one stopped at a bound (at most `MAX_LISTED` objects listed and
`MAX_DELETED` deleted per store and pass, oldest first) or failed; a failed pass's next one is a retry,
paced with the kind's other retries (`runtime.retry_after`: one store down for thousands of objects
does not bring them back together). Deleting is idempotent (a missing key is no
error), so a pass cut short by a crash is finished by the next. A TrainingJob is swept only once
finished (its checkpoints resume a running job). Storage errors never fail the reconcile: they go to
the store's `message` and `llmops_retention_errors_total`.

Why no S3 bucket lifecycle rules: a bucket has one lifecycle configuration, replaced whole by each
PutBucketLifecycleConfiguration, so an operator writing rules for many prefixes races every other
writer of that configuration, and the gateway's Secret should not hold that permission. Where an
administrator sets such rules (on the same prefixes), they and this sweep agree: both delete by age.

`decide` is pure (a listing with times in, deletions out); `sweep` does the I/O with one store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from llmops.api.common import ObjectStorageLocation, StoreRetention
from llmops.gateway_config import SAMPLE_KEY, sample_kind
from llmops.operators import settings
from llmops.operators.outcome import Outcome
from llmops.storage import ObjectInfo, ObjectStore

log = logging.getLogger("llmops.retention")
CONFIGMAP = "llmops-retention"
MAX_LISTED = 100_000
MAX_DELETED = 1_000
RETRY_SECONDS = 60.0  # next pass after one that stopped at a bound or failed
KEPT_IN_WORK_DIR = ("report.json", "stages/")  # the operator reads the report on every reconcile

LABELS = ["namespace", "kind", "name", "store"]
DELETED_OBJECTS = Counter(
    "llmops_retention_deleted_objects_total", "Objects deleted by retention sweeps.", LABELS
)
DELETED_BYTES = Counter("llmops_retention_deleted_bytes_total", "Bytes deleted by retention sweeps.", LABELS)
KEPT_OBJECTS = Gauge("llmops_retention_kept_objects", "Objects of a store kept after the last sweep.", LABELS)
KEPT_BYTES = Gauge("llmops_retention_kept_bytes", "Bytes of a store kept after the last sweep.", LABELS)
ERRORS = Counter("llmops_retention_errors_total", "Retention sweeps of a store that failed.", LABELS)


@dataclass(frozen=True)
class Target:
    """One store of an object: its name, where it lives (`field`: the location's path in the spec,
    for messages), the spec's retention (None: the namespace default) and which keys are its own."""

    store: str
    location: ObjectStorageLocation
    field: str
    days: int | None
    owns: Callable[[str], bool]


def deployment_targets(
    payload: ObjectStorageLocation | None,
    payload_days: int | None,
    feedback: bool,
    feedback_days: int | None,
    drift: ObjectStorageLocation | None,
    drift_days: int | None,
) -> list[Target]:
    """A ModelDeployment's stores: payload samples and feedback (with payload sampling on; feedback
    when on), drift samples (with the drift monitor on)."""
    targets = []
    field = "spec.gateway.payloadSampling.destination"
    if payload is not None:
        targets.append(
            Target("payloadSamples", payload, field, payload_days, lambda k: sample_kind(k) == "payload")
        )
        if feedback:
            targets.append(
                Target("feedback", payload, field, feedback_days, lambda k: sample_kind(k) == "feedback")
            )
    if drift is not None:
        field = "spec.monitoring.drift.prompts"
        targets.append(Target("driftSamples", drift, field, drift_days, lambda k: sample_kind(k) == "prompt"))
    return targets


def work_dir_targets(
    work_dir: ObjectStorageLocation, data_days: int | None, checkpoint_days: int | None
) -> list[Target]:
    """A finished TrainingJob's stores in its work folder (llmops.workload.work_dir_for)."""

    def data(key: str) -> bool:
        return not key.startswith("train/") and not any(
            key == k or (k.endswith("/") and key.startswith(k)) for k in KEPT_IN_WORK_DIR
        )

    field = "spec.output.registry"
    return [
        Target("workData", work_dir, field, data_days, data),
        Target("checkpoints", work_dir, field, checkpoint_days, lambda k: k.startswith("train/")),
    ]


def written(info: ObjectInfo) -> dt.datetime:
    """When an object's data was written: for the gateway's files the earlier of the storage time and
    the UTC time its key names (an erasure rewrites a file under the same key, which must not restart
    its retention); for everything else the storage time."""
    m = SAMPLE_KEY.match(info.key)
    if m is None:
        return info.modified
    try:
        named = dt.datetime.strptime(f"{info.key[:10]} {m.group(1)}", "%Y-%m-%d %H%M%S").replace(
            tzinfo=dt.UTC
        )
    except ValueError:  # a date that is no date (2026-13-40): the storage time
        return info.modified
    return min(named, info.modified)


@dataclass(frozen=True)
class Decision:
    """What one pass does to one store: `delete` (oldest first), and what stays."""

    delete: tuple[ObjectInfo, ...]
    kept_objects: int
    kept_bytes: int
    complete: bool  # False: the listing or the deletions stopped at their bound


def decide(
    listing: Iterable[ObjectInfo],
    owns: Callable[[str], bool],
    cutoff: dt.datetime,
    *,
    max_listed: int = MAX_LISTED,
    max_deleted: int = MAX_DELETED,
) -> Decision:
    """The objects of `listing` that the store owns and that were written before `cutoff`, at most
    `max_deleted` of them (the oldest); the rest of its own objects are kept. Objects the store does
    not own are neither deleted nor counted. Lists at most `max_listed` entries."""
    expired: list[ObjectInfo] = []
    kept_objects = kept_bytes = listed = 0
    complete = True
    for info in listing:
        listed += 1
        if listed > max_listed:
            complete = False
            break
        if not owns(info.key):
            continue
        if written(info) < cutoff:
            expired.append(info)
        else:
            kept_objects += 1
            kept_bytes += info.size
    expired.sort(key=lambda i: (written(i), i.key))
    delete, deferred = expired[:max_deleted], expired[max_deleted:]
    if deferred:
        complete = False
    kept_objects += len(deferred)
    kept_bytes += sum(i.size for i in deferred)
    return Decision(tuple(delete), kept_objects, kept_bytes, complete)


def namespace_defaults(data: dict[str, str] | None) -> tuple[dict[str, int], list[str]]:
    """The ConfigMap's `<store>Days` values, and a problem per key that is not a whole number of days
    between 1 and 36500 (that store then has no default)."""
    days, problems = {}, []
    for key, value in (data or {}).items():
        if not key.endswith("Days"):
            continue
        try:
            number = int(value)
        except ValueError:
            number = 0
        if 1 <= number <= 36500:
            days[key.removesuffix("Days")] = number
        else:
            problems.append(f"ConfigMap {CONFIGMAP} key {key}: {value!r} is not a number of days (1-36500)")
    return days, problems


def sweep(
    store: ObjectStore, target: Target, days: int, now: dt.datetime, previous: StoreRetention | None
) -> StoreRetention:
    """One pass over one store: delete what `decide` says, return the store's new status (deleted
    counts add to `previous`'s). Storage errors propagate."""
    cutoff = now - dt.timedelta(days=days)
    decision = decide(store.list_info(), target.owns, cutoff, max_listed=MAX_LISTED, max_deleted=MAX_DELETED)
    deleted_bytes = 0
    for info in decision.delete:
        store.delete(info.key)
        deleted_bytes += info.size
    return StoreRetention(
        store=target.store,  # type: ignore[arg-type]
        location=store.uri,
        retention_days=days,
        source="spec" if target.days is not None else "namespace",
        kept_objects=decision.kept_objects,
        kept_bytes=decision.kept_bytes,
        deleted_objects=(previous.deleted_objects if previous else 0) + len(decision.delete),
        deleted_bytes=(previous.deleted_bytes if previous else 0) + deleted_bytes,
        last_sweep_time=now,
        complete=decision.complete,
    )


def interval_seconds() -> float:
    """How often each owner sweeps its stores, in seconds ($LLMOPS_RETENTION_SWEEP_SECONDS, 3600 when
    unset or blank). Raises ValueError naming the variable when it is not a number above 0."""
    return settings.seconds(
        os.environ, "LLMOPS_RETENTION_SWEEP_SECONDS", 3600.0, "the retention sweep period"
    )


@dataclass
class Schedule:
    """When each object's next sweep is due (monotonic seconds), and whether it retries a pass that
    failed, in this operator process: a restart sweeps at the first reconcile.

    An entry overdue by more than an interval is an object no longer reconciled (deleted, or its
    retention removed): a live one is reconciled when its sweep falls due. Such entries are dropped,
    at most once an interval, so the schedule holds the objects that sweep, not every object that
    ever did; dropping one changes no answer (a missing entry is due, as an overdue one is)."""

    due: dict[str, float] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    expired: float = 0.0  # when entries overdue by an interval were last dropped

    def take(self, uid: str, now: float) -> bool:
        """True (and reserve the slot for an interval) when `uid`'s sweep is due."""
        with self.lock:
            self._expire(now)
            if self.due.get(uid, 0.0) > now:
                return False
            self.due[uid] = now + interval_seconds()
            self.failing.discard(uid)
            return True

    def soon(self, uid: str, now: float, failed: bool) -> None:
        """`uid`'s next pass in RETRY_SECONDS: a retry when this one `failed`, else the rest of it."""
        with self.lock:
            self.due[uid] = now + RETRY_SECONDS
            if failed:
                self.failing.add(uid)

    def retrying(self, uid: str) -> bool:
        """Whether `uid`'s next pass retries one that failed (until that pass begins)."""
        with self.lock:
            return uid in self.failing

    def seconds_left(self, uid: str, now: float) -> float:
        with self.lock:
            return max(1.0, self.due.get(uid, now) - now)

    def _expire(self, now: float) -> None:
        interval = interval_seconds()
        if now - self.expired < interval:
            return
        self.expired = now
        for uid in [uid for uid, at in self.due.items() if at < now - interval]:
            del self.due[uid]
            self.failing.discard(uid)


SCHEDULE = Schedule()


def run(
    targets: list[Target],
    previous: list[StoreRetention],
    *,
    identity: tuple[str, str, str, str],
    defaults: Callable[[], dict[str, str] | None],
    open_store: Callable[[Target], ObjectStore],
    schedule: Schedule = SCHEDULE,
) -> tuple[list[StoreRetention] | None, float | None, bool]:
    """Sweep `targets` if due: (the new `status.retention`, seconds until the next sweep, whether
    that next pass retries one that failed: a store could not be swept, or the namespace's ConfigMap
    could not be read or holds a value that is not a number of days); when not due, (None, the
    seconds left, whether the pass it waits for is such a retry); (None, None, False) without
    targets. Also due when no store has a retention: the namespace default may have been set since.

    `identity` is (namespace, kind, name, uid); `defaults()` reads the namespace ConfigMap's data
    (None when absent); `open_store(target)` opens its store with its credentials (may raise, e.g. a
    missing Secret: recorded as the store's message)."""
    namespace, kind, name, uid = identity
    clock = time.monotonic()
    if not targets:
        return None, None, False
    if not schedule.take(uid, clock):
        return None, schedule.seconds_left(uid, clock), schedule.retrying(uid)
    try:
        ns_days, problems = namespace_defaults(defaults())
    except Exception as e:  # the apiserver's trouble is not the data's: try again soon
        ns_days, problems = {}, [f"reading ConfigMap {CONFIGMAP} failed ({type(e).__name__})"]
    for problem in problems:
        log.warning("%s/%s: %s", namespace, name, problem)
    before = {r.store: r for r in previous}
    now = dt.datetime.now(dt.UTC)
    result: list[StoreRetention] = []
    failed = bool(problems)
    again = failed
    for target in targets:
        days = target.days if target.days is not None else ns_days.get(target.store)
        if days is None:
            continue
        labels = (namespace, kind, name, target.store)
        try:
            status = sweep(open_store(target), target, days, now, before.get(target.store))
        except Exception as e:
            ERRORS.labels(*labels).inc()
            again = failed = True
            old = before.get(target.store)
            message = f"sweeping {target.field} ({target.location.uri}) failed: {type(e).__name__}: {e}"
            status = StoreRetention(
                store=target.store,  # type: ignore[arg-type]
                location=target.location.uri,
                retention_days=days,
                source="spec" if target.days is not None else "namespace",
                kept_objects=old.kept_objects if old else 0,
                kept_bytes=old.kept_bytes if old else 0,
                deleted_objects=old.deleted_objects if old else 0,
                deleted_bytes=old.deleted_bytes if old else 0,
                last_sweep_time=now,
                complete=False,
                message=message[:256],
            )
        else:
            old = before.get(target.store)
            DELETED_OBJECTS.labels(*labels).inc(status.deleted_objects - (old.deleted_objects if old else 0))
            DELETED_BYTES.labels(*labels).inc(status.deleted_bytes - (old.deleted_bytes if old else 0))
            KEPT_OBJECTS.labels(*labels).set(status.kept_objects)
            KEPT_BYTES.labels(*labels).set(status.kept_bytes)
            again = again or not status.complete
        result.append(status)
    if again:
        schedule.soon(uid, clock, failed)
    return result, schedule.seconds_left(uid, clock), failed


def reconciled(
    ctx: Any, kind: str, targets: list[Target], previous: list[StoreRetention], outcome: Outcome
) -> Outcome:
    """`outcome` with the sweep's result in `status.retention` (when one ran) and a requeue no later
    than the next sweep (a retry, paced as any, when this pass failed; else a clock): the one call
    each owning kind's reconcile makes (`ctx`: the runtime's Context). The Secret reader is imported
    here: the rest of the module is pure (tests/unit/test_purity.py)."""
    from llmops.operators import secrets

    meta = ctx.body["metadata"]

    def defaults() -> dict[str, str] | None:
        configmap = ctx.applier.get("v1", "ConfigMap", CONFIGMAP, ctx.namespace)
        return (configmap or {}).get("data")

    def open_store(target: Target) -> ObjectStore:
        credentials = secrets.credentials(ctx.applier.kube, ctx.namespace, target.location, target.field)
        return ctx.open_store(target.location, credentials, target.field)

    identity = (ctx.namespace, kind, ctx.name, meta.get("uid") or f"{ctx.namespace}/{ctx.name}")
    result, after, failed = run(
        targets, previous, identity=identity, defaults=defaults, open_store=open_store
    )
    if result is not None:
        outcome = dataclasses.replace(outcome, status={**outcome.status, "retention": result})
    return outcome if after is None else outcome.sooner(after, retry=failed)
