"""The shared reconcile path every operator goes through.

parse the spec and the status -> the kind's reconcile (pure builders + apply) -> one full status
write -> the Events its outcome calls for.

A kind supplies only `reconcile(spec, ctx) -> Outcome`. Everything that must be the same for
every kind lives here: a malformed object becomes a Stalled condition and an Event instead of a
crash; Ready/Reconciling/Stalled with observedGeneration; the Event policy (`Announcements`: a
Warning once per new stalled reason, a Normal Event on a phase change); metrics; retries for what
will heal. Kinds post only their domain Events themselves (a canary's step, a failed cleanup).

Slightly over 400 lines on purpose: everything `register` wires into kopf for a kind (the
reconcile, the coalesced requeue, the child watches, the finalizer) reads top to bottom here; the
pure pieces it uses live apart (llmops/operators/outcome.py, llmops/operators/events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import kopf
import pydantic

from llmops import conditions
from llmops.api import API_VERSION, GROUP, VERSION, Resource
from llmops.api.common import ApiModel, CommonReason, ObjectStorageLocation, Status
from llmops.operators import kube, metrics, settings
from llmops.operators.apply import Applier
from llmops.operators.auditing import EVENTS_ONLY, Auditor, Subject
from llmops.operators.backlog import CHANGED_SINCE_LISTED
from llmops.operators.events import Announcements, announcement
from llmops.operators.outcome import Outcome
from llmops.operators.pacing import ResyncPacer
from llmops.operators.views import ChildViews
from llmops.registry import problems as validation_problems
from llmops.storage import Credentials, ObjectStore, StoreCache

Spec = TypeVar("Spec", bound=ApiModel)


@dataclass
class Context:
    """What a kind's reconcile may use: the object, its current status, the applier, and Events."""

    body: dict
    applier: Applier
    logger: logging.Logger | logging.LoggerAdapter
    retry: int = 0  # how often kopf has retried this handler (finalize); 0 on the first try
    # Object stores (registries, work folders) opened once per process and reused by every kind.
    stores: StoreCache = field(default_factory=StoreCache)
    # The status before this reconcile, parsed into the kind's status model (`parse_status`); the
    # runtime fills it in. A kind reads it instead of `body["status"]`.
    status: Status = field(default_factory=Status)
    # Every Event goes through the auditor: an audit record, then the Event (operators/auditing.py).
    auditor: Auditor = EVENTS_ONLY
    # The kind's `audit_subject`: the model version an Event of this object concerns, by default.
    subject: Callable[[dict], Subject] | None = None

    def open_store(
        self, location: ObjectStorageLocation, credentials: Credentials | None, field: str = ""
    ) -> ObjectStore:
        """`stores.open` for `location`, verifying its endpoint against the CA bundle its
        `s3.caBundle` names (a ConfigMap of this object's namespace; `field`: the location's path in
        the spec, for messages). Raises SecretProblem when that ConfigMap or key is missing."""
        from llmops.operators import secrets

        ca_bundle = secrets.ca_bundle(self.applier.kube, self.namespace, location, field)
        if ca_bundle is None:  # the call as it was before caBundle (tests substitute the cache)
            return self.stores.open(location, credentials)
        return self.stores.open(location, credentials, ca_bundle=ca_bundle)

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.body["metadata"]["namespace"]

    def event(
        self,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        model: str | None = None,
        version: str | None = None,
        digests: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
        body: dict | None = None,
    ) -> None:
        """Record a lifecycle action in the audit trail and post its Event (one path for every kind).

        `model`, `version`, `digests` name what the action concerns, over the kind's `audit_subject` of
        the object; `details` go into the record only; `body` stands for the object (default: as read).
        """
        body = self.body if body is None else body
        known = Subject()
        if self.subject is not None:
            try:
                known = self.subject(body)
            except Exception:  # an odd object must not cost its Event: record it without a subject
                self.logger.exception("could not read the audit subject")
        subject = Subject(
            model=model if model is not None else known.model,
            version=str(version) if version is not None else known.version,
            digests=digests if digests is not None else known.digests,
            details={**known.details, **(details or {})},
        )
        self.auditor.post(body, reason, message, warning=warning, subject=subject)


def status_fingerprint(child: dict) -> Any:
    """What of a child matters to its parent, by default: its whole status."""
    return json.dumps(child.get("status") or {}, sort_keys=True, default=str)


def existence(child: dict) -> Any:
    """A fingerprint for children whose state the parent does not read: only their deletion counts."""
    return None


@dataclass(frozen=True)
class Child:
    """Objects a kind creates whose changes re-run the parent's reconcile.

    They are found by the label `llmops.io/<kind>: <parent name>` (operators.manifests.labels_for) and
    watched; when a child's `fingerprint` changes, or it is deleted, the parent is reconciled again.
    A kind whose CRD is not installed (KEDA's, prometheus-operator's) is watched once it appears.
    With `views`, the watch keeps each child's view there (`ChildViews`) and the fingerprint is read
    from the views, before and after, so the parent's reconcile can read the children it needs from
    them instead of from the API.
    """

    group: str  # "apps"; "" for the core group
    version: str
    plural: str
    fingerprint: Callable[[dict], Any] = status_fingerprint
    views: ChildViews | None = None


@dataclass(frozen=True)
class Kind(Generic[Spec]):
    """One custom resource the operator reconciles: its registry entry and its reconcile."""

    resource: Resource
    reconcile: Callable[[Spec, Context], Outcome]
    children: tuple[Child, ...] = ()
    # Cleanup that no owner reference reaches (a job on a cluster we do not own), run before the
    # object goes. Only objects that `finalize_when(body)` accepts get the finalizer. Raise
    # kopf.TemporaryError to retry; an unreadable spec skips it (nothing was made from it).
    finalize: Callable[[Spec, Context], None] | None = None
    finalize_when: Callable[[dict], bool] | None = None
    # Told of every child deleted (its last body), before the parent's reconcile is asked for: a kind
    # that skips applying unchanged children forgets it here, so the reconcile puts it back.
    child_deleted: Callable[[dict], None] | None = None
    # The Events the runtime posts from the kind's outcomes; None: the kind posts its own.
    announcements: Announcements | None = None
    # The model version (and digests) an Event of an object concerns, from the object as it is after
    # the reconcile (its new status in place): the audit record's model, version and digests.
    audit_subject: Callable[[dict], Subject] | None = None
    # The objects of this kind retrying now, so that their retries together keep to Pace.retry_rate
    # (`retry_after`): state of the operator process, not of the declaration.
    retrying: ResyncPacer = field(default_factory=ResyncPacer, compare=False, repr=False)
    # The objects of this kind polling now (`Outcome.poll`), so that their polls together keep to
    # Pace.poll_rate (`poll_after`): state of the operator process too.
    polling: ResyncPacer = field(default_factory=ResyncPacer, compare=False, repr=False)


def describe_validation_error(error: pydantic.ValidationError, prefix: str = "spec") -> str:
    """`spec.method.lora.r: Input should be greater than 0; ...` (field paths, never values; the CLI's
    formatter, `registry.problems`, with every problem, at most 2,000 characters)."""
    return validation_problems(error, most=error.error_count(), under=prefix)[:2000]


def parse_status(resource: Resource, body: dict) -> Status:
    """The object's current status as the kind's status model; an unreadable one reads as empty."""
    try:
        return resource.status.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        return resource.status()  # an unreadable status is rewritten whole


def status_patch(
    resource: Resource,
    body: dict,
    outcome: Outcome,
    now: dt.datetime | None = None,
    current: Status | None = None,
) -> dict:
    """The full status to write: the kind's fields, phase, message, conditions, observedGeneration.

    `current` is the status before, as `parse_status` reads it from `body` (parsed again if None).
    """
    generation = body.get("metadata", {}).get("generation", 0)
    if current is None:
        current = parse_status(resource, body)
    now = now or dt.datetime.now(dt.UTC)
    found = conditions.standard(
        current.conditions, outcome.state, outcome.reason, outcome.message, generation, now
    )
    for type, value, reason, message in outcome.conditions:
        found = conditions.set_condition(found, type, value, reason, message, generation, now)
    status = current.model_copy(
        update={**outcome.status, "phase": outcome.phase, "message": outcome.message, "conditions": found}
    )
    # Re-validate so a kind's status fields are checked against the model before they are written.
    status = resource.status.model_validate(status.model_dump(by_alias=True))
    return conditions.status_patch(status, generation)


def _heals(error: Exception) -> bool:
    """API errors worth a retry: conflicts, throttling, server errors, timeouts."""
    status = getattr(error, "status", None)
    return isinstance(error, kube.ApiError) and (status is None or status in (409, 429) or status >= 500)


class Backoff:
    """Waits before trying an object again after failures in a row: `base` seconds after the first,
    doubling after each further one, at most `most` (client-go workqueue's
    ItemExponentialFailureRateLimiter, the per-object backoff controller-runtime requeues errors with).
    Kept in memory, by object uid: a restarted operator starts each object again at `base`."""

    def __init__(self, base: float, most: float) -> None:
        self.base, self.most = base, most
        self._failures: dict[str, int] = {}

    def failed(self, key: str) -> float:
        """Count one more failure of `key`; the seconds to wait before its next try."""
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        return min(self.base * 2 ** (n - 1), self.most)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


# A reconcile that raised an unexpected error: tried again after 30 s, 60 s, 120 s... at most 10 min.
INTERNAL_ERRORS = Backoff(30.0, 600.0)
HEAL_RETRY_SECONDS = 10.0  # an API error that heals (a conflict, throttling, a 5xx): kopf tries again


@dataclass(frozen=True)
class Pace:
    """How many retries and polls of each kind may come a second, all its objects together (operator
    settings: the environment's LLMOPS_RETRY_RATE and LLMOPS_POLL_RATE, the chart's
    `workloads.retryRate` and `workloads.pollRate`; numbers above 0).

    Retries (an outcome's `retry`, INTERNAL_ERRORS' waits, and the retries of API errors that heal):
    once more objects of a kind retry than the wait times `retry_rate` (300 for the minute a Stalled
    object waits, 100 for a 20 s retry, at 5 a second), each one waits objects ÷ `retry_rate`
    seconds (operators.pacing). Each retry costs a poke (a PATCH and its watch event) and a reconcile
    that reads and fails again. client-go's default controller rate limiter bounds requeued failures
    likewise (an overall token bucket, 10 a second, beside the per-object backoff); ours is per kind
    and leaves room for resyncs and changes.

    Polls (`Outcome.poll`: a TrainingJob reading its run's progress, a ModelRetirement waiting on a
    drain, a RetrainPolicy evaluating its triggers, a ModelDeployment looking at a suspend's drain or a
    lingering child): at 5 a second, up to 50 objects polling every 10 s keep their period, 500 poll
    every 100 s. Each poll costs a poke and a reconcile that reads from outside (the Ray job's API,
    Prometheus, the store), so without a bound their count alone would set the operator's load and
    theirs. A ModelDeployment's resyncs and alias polls are paced by its own settings
    (ServingSettings.resync_rate, alias_poll_rate), which also count the objects not begun yet; these
    two do not, since an object not begun yet is not known to retry or poll (counting them would hold
    back the first failures of a mass create by every object behind them)."""

    retry_rate: float = 5.0
    poll_rate: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str | None] | None = None) -> Pace:
        """LLMOPS_RETRY_RATE and LLMOPS_POLL_RATE, each the default when unset or blank. Raises
        ValueError naming the variable when one is not a number above 0 (operators.settings.rate)."""
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            retry_rate=settings.rate(env, "LLMOPS_RETRY_RATE", defaults.retry_rate, "retries of a kind"),
            poll_rate=settings.rate(env, "LLMOPS_POLL_RATE", defaults.poll_rate, "polls of a kind"),
        )


_pace: Pace | None = None


def pace() -> Pace:
    """The operator's Pace, read from its environment at first use (the operator's start checks it
    first: llmops.operators.cli)."""
    global _pace
    if _pace is None:
        _pace = Pace.from_env()
    return _pace


def retry_after(kind: Kind, body: dict, seconds: float) -> float:
    """The wait before object `body` of `kind` retries, in seconds: `seconds` (what its reconcile
    asked for), or the objects of the kind retrying ÷ Pace.retry_rate when that is longer
    (`kind.retrying` counts this one from now until its next reconcile that is not a retry, or twice
    its wait)."""
    return kind.retrying.period(_key(body), seconds, pace().retry_rate)


def poll_after(kind: Kind, body: dict, seconds: float) -> float:
    """The wait before object `body` of `kind` polls again, in seconds: `seconds` (what its reconcile
    asked for), or the objects of the kind polling ÷ Pace.poll_rate when that is longer (`kind.polling`
    counts this one from now until its next reconcile that does not poll, or twice its wait)."""
    return kind.polling.period(_key(body), seconds, pace().poll_rate)


def _context(
    kind: Kind,
    body: dict,
    applier: Applier,
    logger: Any,
    stores: StoreCache | None,
    auditor: Auditor | None,
    retry: int = 0,
) -> Context:
    """The Context a reconcile or a clean-up of `body` gets: its status parsed, the audit trail."""
    ctx = Context(
        body=body,
        applier=applier,
        logger=logger,
        retry=retry,
        status=parse_status(kind.resource, body),
        auditor=auditor or EVENTS_ONLY,
        subject=kind.audit_subject,
    )
    if stores is not None:  # the operator process's own (an empty cache is falsy: no `or`)
        ctx.stores = stores
    return ctx


def _stalled_reason(body: dict) -> str | None:
    stalled = next(
        (c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == "Stalled"), {}
    )
    return stalled.get("reason") if stalled.get("status") == "True" else None


def reconcile(
    kind: Kind,
    body: dict,
    applier: Applier,
    logger: Any,
    patch: kopf.Patch,
    stores: StoreCache | None = None,
    auditor: Auditor | None = None,
) -> float | None:
    """Run one reconcile of `body` and put the full status into kopf's `patch`.

    Never raises on a malformed object: that becomes Stalled plus a Warning Event. API errors
    that will heal become Reconciling and a retry; anything else is Stalled (InternalError), tried
    again after the wait `INTERNAL_ERRORS` gives (30 s, doubling, at most 10 minutes), stretched as
    any retry is. Returns the outcome's `requeue_after`; a retry's is stretched when many objects of
    the kind retry (`retry_after`), a poll's when many poll (`poll_after`), but not past the
    outcome's `clock`.
    """
    resource = kind.resource
    kind.retrying.forget(_key(body))  # counted again below if it retries
    kind.polling.forget(_key(body))  # or polls
    ctx = _context(kind, body, applier, logger, stores, auditor)
    with metrics.timed(resource.kind):
        try:
            spec = resource.spec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as e:
            message = describe_validation_error(e)
            ctx.event(
                CommonReason.INVALID_SPEC, f"{message}. Fix the spec; nothing was changed.", warning=True
            )
            return _write(
                patch, resource, body, Outcome("stalled", "Failed", CommonReason.INVALID_SPEC, message)
            )
        try:
            outcome = kind.reconcile(spec, ctx)
            # A kind's bad status field is a bug too, and so is an Event its policy cannot compose:
            # stalled and retried (paced) here, not left to kopf's own unpaced backoff. The Events are
            # only posted below, once the status they announce is the one written.
            status = status_patch(resource, body, outcome, current=ctx.status)
            said = announcements(kind, ctx, outcome, status)
        except kopf.PermanentError as e:
            ctx.event(CommonReason.RECONCILE_FAILED, str(e), warning=True)
            return _write(
                patch, resource, body, Outcome("stalled", "Failed", CommonReason.RECONCILE_FAILED, str(e))
            )
        except Exception as e:
            phase = (body.get("status") or {}).get("phase") or "Pending"
            if _heals(e):
                message = f"{type(e).__name__} from the API while reconciling; retrying"
                _write(patch, resource, body, Outcome("reconciling", phase, CommonReason.RETRYING, message))
                raise kopf.TemporaryError(message, delay=retry_after(kind, body, HEAL_RETRY_SECONDS)) from e
            # A bug or an unexpected object: say so on the object; do not crash or spin, and look
            # again later, less often the longer it lasts (what broke may have been passing).
            metrics.ERRORS.labels(resource.kind, type(e).__name__).inc()
            logger.exception("reconcile failed")
            message = f"internal error ({type(e).__name__}); see the operator log"
            if _stalled_reason(body) != CommonReason.INTERNAL_ERROR:  # one Warning, not one per retry
                ctx.event(CommonReason.INTERNAL_ERROR, message, warning=True)
            retry = retry_after(kind, body, INTERNAL_ERRORS.failed(_key(body)))
            _write(
                patch,
                resource,
                body,
                Outcome("stalled", "Failed", CommonReason.INTERNAL_ERROR, message, requeue_after=retry),
            )
            return retry
        patch.status.update(status)
        INTERNAL_ERRORS.succeeded(_key(body))
        metrics.RECONCILES.labels(resource.kind, outcome.state).inc()
        _post(ctx, said)
        if outcome.requeue_after is not None and (outcome.retry or outcome.poll):
            paced = retry_after if outcome.retry else poll_after
            after = paced(kind, body, outcome.requeue_after)
            return after if outcome.clock is None else min(after, outcome.clock)
        return outcome.requeue_after


# An Event a kind's policy asks for: (reason, message, warning, the object as announced, the audit
# subject's keyword arguments of `Context.event`).
Announced = tuple[str, str, bool, dict, dict[str, Any]]


def announce(kind: Kind, ctx: Context, outcome: Outcome, after: dict | None = None) -> None:
    """Post the Events the kind's policy asks for after `outcome` (`announcements`)."""
    _post(ctx, announcements(kind, ctx, outcome, after))


def _post(ctx: Context, said: list[Announced]) -> None:
    for reason, message, warning, body, subject in said:
        ctx.event(reason, message, warning=warning, body=body, **subject)


def announcements(kind: Kind, ctx: Context, outcome: Outcome, after: dict | None = None) -> list[Announced]:
    """The Events the kind's policy asks for after `outcome` (`Announced`, the object with `after`
    as its status), none when the kind has no policy. Posts nothing.

    `after`: the status written (status_patch); the Events' audit subject is read from the object
    with it in place.
    """
    if kind.announcements is None:
        return []
    if after is None:
        after = status_patch(kind.resource, ctx.body, outcome, current=ctx.status)
    body = {**ctx.body, "status": after}
    found: list[Announced] = []
    said = announcement(kind.announcements, ctx.status, outcome)
    if said is not None:
        reason, message, warning = said
        found.append((reason, message, warning, body, {}))
    if kind.announcements.transitions is not None:
        for reason, message, warning, subject in kind.announcements.transitions(ctx.status, after):
            found.append((reason, message, warning, body, subject))
    return found


def _key(body: dict) -> str:
    meta = body.get("metadata") or {}
    return meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"


def _write(patch: kopf.Patch, resource: Resource, body: dict, outcome: Outcome) -> None:
    patch.status.update(status_patch(resource, body, outcome))
    metrics.RECONCILES.labels(
        resource.kind, "retry" if outcome.reason == CommonReason.RETRYING else outcome.state
    ).inc()


# Changing this annotation makes kopf see a change and run the reconcile (kopf ignores annotations
# under its own storage prefix, llmops.io/, so it lives under another). Users may set it too:
#   kubectl annotate md NAME reconcile.llmops.io/requestedAt="$(date +%s)" --overwrite
REQUEST_ANNOTATION = "reconcile.llmops.io/requestedAt"
CHILD_DEBOUNCE_SECONDS = 1.0
# How long a poke may wait for its reconcile before the object is poked again (Requeue): above the
# time a poked object waits for a worker at a cold start of thousands (the handler's thread pool and
# kopf's `worker_limit`), so that the waiting costs no more PATCHes.
POKE_PENDING_SECONDS = 60.0
REQUEUE_LOG = logging.getLogger("llmops.operators.requeue")
REQUEUE_FAILED = "could not request a reconcile of"


class Requeue:
    """Reconciles asked for later, coalesced: one due time per object, the earliest asked for.

    When one falls due the object is poked (REQUEST_ANNOTATION set to the time), which kopf sees
    as a change: the reconcile then runs through kopf, one at a time per object, as for any change.
    Lost on restart, and that is harmless: kopf resumes (reconciles) every object at start.

    An object already poked whose reconcile has not started yet (`started` not called since) is not
    poked again when another request falls due within POKE_PENDING_SECONDS: the reconcile it waits for
    reads everything as it is when it runs, so a second poke would only cost a PATCH, its watch event
    and one more reconcile. After that time (a poke whose watch event went astray) it is poked again.
    """

    def __init__(self, resource: Resource, concurrency: int = 8) -> None:
        self.resource = resource
        self.concurrency = concurrency
        self._due: dict[tuple[str, str], float] = {}
        self._poked: dict[tuple[str, str], float] = {}  # poked, reconcile not started: since when
        self._swept = time.monotonic()  # when `_poked` was last rid of what waited past its time
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def later(self, namespace: str, name: str, delay: float) -> None:
        """Reconcile namespace/name in `delay` seconds (or sooner, if already asked). Thread-safe."""
        due = time.monotonic() + max(delay, 0.0)
        with self._lock:
            key = (namespace, name)
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def started(self, namespace: str, name: str) -> None:
        """A reconcile of namespace/name begins: a request from now on pokes it again. Thread-safe."""
        with self._lock:
            self._poked.pop((namespace, name), None)

    def _awaited(self, key: tuple[str, str]) -> bool:
        """Whether `key` was poked and its reconcile has not started (POKE_PENDING_SECONDS at most);
        if not, it is marked poked from now on (before the PATCH: its reconcile may start at once)."""
        now = time.monotonic()
        with self._lock:
            since = self._poked.get(key)
            if since is not None and now - since < POKE_PENDING_SECONDS:
                return True
            self._poked[key] = now
            return False

    def pending(self) -> int:
        with self._lock:
            return len(self._due)

    def start(self, applier: Applier, logger: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(applier, logger), name=f"requeue {self.resource.plural}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _take_due(self) -> tuple[list[tuple[str, str]], float | None]:
        now = time.monotonic()
        with self._lock:
            if now - self._swept > POKE_PENDING_SECONDS:  # objects deleted after a poke, say
                self._poked = {k: at for k, at in self._poked.items() if now - at < POKE_PENDING_SECONDS}
                self._swept = now
            due = [key for key, at in self._due.items() if at <= now]
            for key in due:
                del self._due[key]
            wait = min(self._due.values(), default=None)
        return due, None if wait is None else max(wait - now, 0.0)

    async def _run(self, applier: Applier, logger: Any) -> None:
        assert self._wake is not None
        limit = asyncio.Semaphore(self.concurrency)

        async def poke(namespace: str, name: str) -> None:
            if self._awaited((namespace, name)):
                return
            async with limit:
                try:
                    await asyncio.to_thread(self._poke, applier, namespace, name)
                except Exception as e:  # the object is gone (404) or the API is away: try later
                    self.started(namespace, name)  # no poke is waiting for a reconcile
                    if getattr(e, "status", None) != 404:
                        # One record per object and try would flood the log while the apiserver is
                        # away: these go through ReconnectLog (llmops/operators/main.py), at a bounded
                        # rate with a count of those not shown.
                        REQUEUE_LOG.warning(f"{REQUEUE_FAILED} {namespace}/{name}: {e}")
                        self.later(namespace, name, 10)

        while True:
            due, wait = self._take_due()
            if due:
                await asyncio.gather(*(poke(ns, name) for ns, name in due))
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def _poke(self, applier: Applier, namespace: str, name: str) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        applier.kube.merge_patch(
            API_VERSION,
            self.resource.kind,
            name,
            namespace,
            {"metadata": {"annotations": {REQUEST_ANNOTATION: now}}},
        )


def child_label(kind: Kind) -> str:
    """The label on every child of `kind` (operators.manifests.labels_for), valued the parent's name."""
    return f"llmops.io/{kind.resource.kind.lower()}"


def own_resources(kinds: list[Kind]) -> set[tuple[str, str, str]]:
    """The kinds' own resources, as (group, version, plural)."""
    return {(GROUP, VERSION, kind.resource.plural) for kind in kinds}


def watched_resources(kinds: list[Kind]) -> set[tuple[str, str, str]]:
    """Every (group, version, plural) the operator watches: the kinds and every kind of child."""
    return own_resources(kinds) | {(c.group, c.version, c.plural) for kind in kinds for c in kind.children}


def deletions_only(kinds: list[Kind]) -> set[tuple[str, str, str]]:
    """The watched resources of which only deletions count, as (group, version, plural): those that
    every kind watching them watches as children fingerprinted by `existence` (not a kind's own
    resource). Any other event of theirs (a listing's, ADDED, MODIFIED: a status the controllers
    write) re-runs no parent (`_watch_child`), so operators.main drops those from the stream: at 10,000
    ModelDeployments one listing again of their 80,000 Services, ConfigMaps, NetworkPolicies,
    ScaledObjects and PodMonitors took the operator from 177 to 292 MiB."""
    only: dict[tuple[str, str, str], bool] = {}
    for kind in kinds:
        for c in kind.children:
            key = (c.group, c.version, c.plural)
            only[key] = only.get(key, True) and c.fingerprint is existence and c.views is None
    own = own_resources(kinds)
    return {key for key, flag in only.items() if flag and key not in own}


def direct_children(kinds: list[Kind]) -> set[tuple[str, str, str]]:
    """The watched resources whose events operators.main hands to their child watches itself, as
    (group, version, plural), and never to kopf: every kind of child but a kind's own resource (a
    RetrainPolicy's TrainingJobs, which kopf reconciles). For an object of a resource it processes,
    kopf makes a worker (a task, a queue, a place of `settings.queueing.worker_limit`, held for
    `idle_timeout` after the object's last event); a child watch needs none of that, only each event
    in the order the apiserver sent it. At a restart of 1,000 ModelDeployments their 2,000 Deployments
    listed through kopf's workers left the operator at 136-148 MiB, against 108-109 for the first start
    (docs/operations.md, "A restart lists every object and child, in pages")."""
    return watched_resources(kinds) - own_resources(kinds)


# The child watches of the resources of operators.main.DIRECT, which it runs from their watch stream
# (`child_event`): (group, version, plural) -> the watch's id -> its handler of one raw event.
# `_watch_child` fills it; operators.main.build_registry empties it first, so it holds the watches of
# the newest registry only (a process may run an operator again, with other kinds: the tests).
CHILD_WATCHES: dict[tuple[str, str, str], dict[str, Callable[[dict], Awaitable[None]]]] = {}
CHILD_LOG = logging.getLogger("llmops.operators.children")


async def child_event(resource: tuple[str, str, str], event: dict) -> None:
    """Hand one raw watch event (`{"type": None | "ADDED" | "MODIFIED" | "DELETED", "object": ...}`)
    of `resource` to each of its child watches. One that fails is logged and the others still run: the
    stream must go on."""
    for watch_id, handler in list(CHILD_WATCHES.get(resource, {}).items()):
        try:
            await handler(event)
        except Exception:
            meta = (event.get("object") or {}).get("metadata") or {}
            CHILD_LOG.exception(
                "the child watch %s failed on the %s event of %s/%s",
                watch_id,
                event.get("type") or "listing",
                meta.get("namespace"),
                meta.get("name"),
            )


def child_selectors(kinds: list[Kind]) -> dict[tuple[str, str, str], str]:
    """Label selectors for the apiserver to apply to the child watches (kopf's
    `settings.watching.label_selectors`), by (group, version, plural): `llmops.io/<kind>`, present.

    Without one, kopf lists and watches every object of a child's resource in the watched namespaces
    (every Deployment, Service, ConfigMap...), keeps a record of each (about 1 KiB) and filters them by
    label only then. A resource that two kinds watch as children, or that is a kind's own resource (a
    RetrainPolicy's TrainingJobs), gets no selector: kopf filters it as before.
    """
    labels: dict[tuple[str, str, str], set[str]] = {}
    for kind in kinds:
        for child in kind.children:
            labels.setdefault((child.group, child.version, child.plural), set()).add(child_label(kind))
    own = own_resources(kinds)
    return {key: label for key, (label, *more) in labels.items() if not more and key not in own}


def _watch_child(kind: Kind, child: Child, requeue: Requeue, registry: kopf.OperatorRegistry) -> None:
    """Re-run the parent's reconcile when a child's fingerprint changes or the child goes away.

    A listing (type None) of a child this watch meets for the first time only records it: that is the
    operator's start, when kopf resumes every parent anyway (a child whose view a reconcile recorded
    from its own apply counts as met). A listing of a child it has met before is
    kopf listing again after a gap in the watch (an expired resource version, as after the apiserver's
    restart: kopf's `continuous_watch` then lists anew, every object as type None), and a child that
    changed in the gap re-runs its parent like any change; so does a child of our own group that
    changed while it waited for a place (operators.backlog: `CHANGED_SINCE_LISTED`). A child deleted in
    the gap is not seen: kopf's listing says nothing of what is gone.

    The handler is registered with kopf, so that kopf lists and watches the child's resource; the
    events of a resource that is no kind's own reach it straight from that stream (operators.main's
    DIRECT, through `CHILD_WATCHES`), not through kopf's workers.
    """
    label = child_label(kind)
    empty = child.fingerprint({})
    # child uid -> last fingerprint, for every child whose fingerprint can change (children that only
    # count by their deletion, `existence`, take no memory at all). A child kind with `views` keeps its
    # views there instead, and its fingerprints are read from them.
    seen: dict[str, Any] = {}
    views = child.views
    tracked = child.fingerprint is not existence
    watch_id = f"{kind.resource.plural}-child-{child.plural}"

    @kopf.on.event(
        child.group,
        child.version,
        child.plural,
        labels={label: kopf.PRESENT},
        id=watch_id,
        registry=registry,
    )
    async def child_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        uid, namespace, parent = meta.get("uid"), meta.get("namespace"), meta.get("labels", {}).get(label)
        if not (uid and namespace and parent):
            return
        if event["type"] == "DELETED":
            seen.pop(uid, None)
            if views is not None:
                views.forget(dict(body))
            if kind.child_deleted is not None:
                kind.child_deleted(dict(body))
            requeue.later(namespace, parent, CHILD_DEBOUNCE_SECONDS)
            return
        if views is not None:
            was, now = views.record(dict(body))
            known = was is not None
            before = empty if was is None else child.fingerprint(was.body())
            fingerprint = empty if now is None else child.fingerprint(now.body())
        else:
            fingerprint = child.fingerprint(dict(body))
            known = uid in seen
            before = seen.pop(uid, empty)
            if tracked:
                seen[uid] = fingerprint
        change = event["type"] is not None or known or bool(event.get(CHANGED_SINCE_LISTED))
        if change and fingerprint != before:
            requeue.later(namespace, parent, CHILD_DEBOUNCE_SECONDS)

    async def raw(event: dict) -> None:
        await child_changed(event=event, body=event["object"])

    CHILD_WATCHES.setdefault((child.group, child.version, child.plural), {})[watch_id] = raw


def register(kind: Kind, registry: kopf.OperatorRegistry) -> None:
    """One idempotent reconcile for create, update and resume (kopf runs it once per change).

    Plus what makes it level-based: reconciles asked for later (`Outcome.requeue_after`) and
    reconciles of the parent when one of its children (`Kind.children`) changes.
    """
    plural = kind.resource.plural
    requeue = Requeue(kind.resource)

    @kopf.on.resume(GROUP, VERSION, plural, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, plural, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, plural, id="reconcile", registry=registry)
    def handler(body: kopf.Body, patch: kopf.Patch, logger: Any, memo: kopf.Memo, **_: Any) -> None:
        requeue.started(body["metadata"]["namespace"], body["metadata"]["name"])
        after = reconcile(kind, dict(body), memo.applier, logger, patch, memo.stores, memo.get("auditor"))
        if after is not None:
            meta = body["metadata"]
            requeue.later(meta["namespace"], meta["name"], after)

    @kopf.on.startup(id=f"requeue-{plural}", registry=registry)
    async def start_requeue(memo: kopf.Memo, logger: Any, **_: Any) -> None:
        if memo.get("applier") is None:  # the operator's own start-up has not succeeded (yet)
            raise kopf.TemporaryError("waiting for the operator's start-up (its API client)", delay=5)
        requeue.start(memo.applier, logger)

    @kopf.on.cleanup(id=f"requeue-{plural}", registry=registry)
    async def stop_requeue(**_: Any) -> None:
        await requeue.stop()

    for child in kind.children:
        _watch_child(kind, child, requeue, registry)

    if kind.finalize is not None:
        _register_finalize(kind, registry)


def finalize(
    kind: Kind,
    body: dict,
    applier: Applier,
    logger: Any,
    retry: int,
    stores: StoreCache | None = None,
    auditor: Auditor | None = None,
) -> None:
    """Run the kind's clean-up (`Kind.finalize`) of `body` before kopf removes its finalizer; an
    object whose spec does not parse has nothing of ours to stop. `retry` is kopf's count of the
    tries before this one. The kind asks for another try by raising kopf.TemporaryError; its delay is
    stretched as any retry of the kind is (`retry_after`): one Ray cluster gone for many objects
    being deleted does not bring them back together."""
    assert kind.finalize is not None
    try:
        spec = kind.resource.spec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError:
        return
    ctx = _context(kind, body, applier, logger, stores, auditor, retry=retry)
    kind.retrying.forget(_key(body))  # counted again below if it retries
    kind.polling.forget(_key(body))  # or polls
    try:
        kind.finalize(spec, ctx)
    except kopf.TemporaryError as e:  # kopf's delay None: again at once, which pacing may stretch
        raise kopf.TemporaryError(*e.args, delay=retry_after(kind, body, e.delay or 0.0)) from e


def _register_finalize(kind: Kind, registry: kopf.OperatorRegistry) -> None:
    accepts = kind.finalize_when

    @kopf.on.delete(
        GROUP,
        VERSION,
        kind.resource.plural,
        id="finalize",
        when=(lambda body, **_: accepts(dict(body))) if accepts else None,
        registry=registry,
    )
    def handler(body: kopf.Body, logger: Any, memo: kopf.Memo, retry: int, **_: Any) -> None:
        finalize(kind, dict(body), memo.applier, logger, retry, memo.stores, memo.get("auditor"))
