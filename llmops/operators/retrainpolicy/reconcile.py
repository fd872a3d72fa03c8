"""The RetrainPolicy reconcile: the only I/O of the kind. Read the facts (the target ModelDeployment,
the policy's TrainingJobs from the API, the registry's aliases, Prometheus, storage), let the pure
modules decide (triggers.py, plan.py, promotion.py, builders.py), act, fold (fold.py).

Crash safety: nothing is decided from memory. A run's TrainingJob is created under a name derived
from its trigger time and `AlreadyExists` counts as success (kuberay #4849's lesson); what a run
consumed (the scheduled time, the manual request, the newest data key) is written on the TrainingJob
itself, so a reconcile after a crash reads it back from the children even when the status write was
lost; alias moves carry an idempotency key derived from the run and the step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from typing import Any

import pydantic

from llmops import registry
from llmops.api import API_VERSION, MODEL_DEPLOYMENT, TRAINING_JOB
from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from llmops.api.retrainpolicy import (
    APPROVAL_ANNOTATION,
    MANUAL_TRIGGER_ANNOTATION,
    EventReason,
    Reason,
    RetrainPolicySpec,
    RetrainPolicyStatus,
    RunRecord,
    TriggerStatus,
)
from llmops.audit import REQUESTED_BY
from llmops.operators import secrets
from llmops.operators import settings as operator_settings
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.outcome import Outcome
from llmops.operators.prometheus import Prometheus
from llmops.operators.registry_access import describe, refused
from llmops.operators.retrainpolicy import builders, fold, names, plan, promotion, triggers
from llmops.operators.retrainpolicy.names import POLICY_LABEL
from llmops.operators.retrainpolicy.triggers import Firing
from llmops.operators.runtime import Context

STALLED_RETRY_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """The operator's settings for RetrainPolicies ($LLMOPS_RETRAIN_EVALUATION_SECONDS, and the
    Prometheus the ModelDeployments use, $LLMOPS_PROMETHEUS_URL)."""

    evaluate_every: float = 60.0
    prometheus_url: str = ServingSettings.prometheus_url

    @classmethod
    def from_env(cls) -> Settings:
        """Raises ValueError naming the variable when one is not what it takes (operators.settings)."""
        every = operator_settings.seconds(
            os.environ,
            "LLMOPS_RETRAIN_EVALUATION_SECONDS",
            cls.evaluate_every,
            "the triggers' evaluation period",
        )
        return cls(evaluate_every=every, prometheus_url=ServingSettings.from_env().prometheus_url)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Reconciler:
    """The kind's reconcile with its settings; `prometheus` (anything with `query(promql)`) and
    `clock` are the operator's own unless a test gives others."""

    def __init__(
        self,
        settings: Settings | None = None,
        prometheus: Any = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._prometheus = prometheus
        self.clock = clock

    @property
    def settings(self) -> Settings:
        return self._settings or Settings.from_env()

    @property
    def prometheus(self) -> Any:
        return self._prometheus or Prometheus(self.settings.prometheus_url)

    def __call__(self, spec: RetrainPolicySpec, ctx: Context) -> Outcome:
        return reconcile(spec, ctx, self.settings, self.prometheus, self.clock())


def reconcile(
    spec: RetrainPolicySpec, ctx: Context, settings: Settings, prometheus: Any, now: dt.datetime
) -> Outcome:
    before = ctx.status
    assert isinstance(before, RetrainPolicyStatus)
    name, namespace, policy = ctx.name, ctx.namespace, ctx.body

    # -- the target --------------------------------------------------------------------------
    md_body = ctx.applier.get(API_VERSION, MODEL_DEPLOYMENT.kind, spec.model_deployment, namespace)
    if md_body is None:
        return fold.stalled(
            Reason.DEPLOYMENT_NOT_FOUND,
            f"spec.modelDeployment: ModelDeployment {spec.model_deployment!r} does not exist in"
            f" namespace {namespace!r}",
            STALLED_RETRY_SECONDS,
        )
    try:
        md = ModelDeploymentSpec.model_validate(md_body.get("spec") or {})
    except pydantic.ValidationError:
        return fold.stalled(
            Reason.DEPLOYMENT_NOT_FOUND,
            f"spec.modelDeployment: ModelDeployment {spec.model_deployment!r} has an invalid spec",
            STALLED_RETRY_SECONDS,
        )
    problem = plan.target_problem(spec, md)
    if problem is not None:
        return fold.stalled(*problem, STALLED_RETRY_SECONDS)
    try:
        md_status = ModelDeploymentStatus.model_validate(md_body.get("status") or {})
    except pydantic.ValidationError:
        md_status = ModelDeploymentStatus()
    model = md.model.name
    try:
        field = f"ModelDeployment {spec.model_deployment} spec.registry"
        credentials = secrets.credentials(ctx.applier.kube, namespace, md.registry, field)
        store = ctx.open_store(md.registry, credentials, field)
        champion_move = registry.read_alias(store, model, spec.promotion.champion_alias)
        challenger_move = registry.read_alias(store, model, spec.promotion.challenger_alias)
    except secrets.SecretProblem as e:
        return fold.stalled(Reason.CREDENTIALS_NOT_FOUND, str(e), STALLED_RETRY_SECONDS)
    except Exception as e:
        if refused(e):  # refused credentials, access denied, a missing bucket, TLS: a person must act
            return fold.stalled(
                Reason.STORAGE_REFUSED,
                f"cannot read the aliases of {model!r} in {md.registry.uri}: {describe(e)}",
                STALLED_RETRY_SECONDS,
            )
        return Outcome(
            "reconciling",
            before.phase or "Watching",
            Reason.REGISTRY_UNAVAILABLE,
            f"cannot read the aliases of {model!r} in {md.registry.uri} ({describe(e)}); retrying",
            requeue_after=30.0,
            retry=True,
        )
    champion = champion_move.version if champion_move else None
    challenger = challenger_move.version if challenger_move else None

    # -- the runs, from the API (never a cache) -------------------------------------------------
    children = ctx.applier.list(
        API_VERSION, TRAINING_JOB.kind, namespace, label_selector=f"{POLICY_LABEL}={name}"
    )
    runs = [fold.run_of(c) for c in children]
    records = fold.records(children, before.runs)

    # -- triggers ----------------------------------------------------------------------------
    previous = {t.type: t for t in before.triggers}
    statuses: list[TriggerStatus] = []
    firings: list[Firing] = []
    last_schedule = fold.last_schedule(before, children, policy)
    next_schedule = None
    notes: list[str] = []
    data_marker: str | None = None
    # The newest data key the last run consumed (its TrainingJob's annotation, or status once the
    # history limits deleted it).
    consumed = fold.latest_annotation(children, names.DATA_MARKER) or before.data_marker

    t = spec.triggers
    if t.schedule is not None:
        check = triggers.schedule(t.schedule, last_schedule, now)
        next_schedule = check.next.astimezone(dt.UTC)
        message = f"next at {next_schedule.isoformat()}"
        if check.due is not None:
            message = f"due since {check.due.isoformat()}"
            firings.append(
                Firing(
                    "schedule",
                    check.due,
                    check.due.isoformat(),
                    f"schedule {t.schedule.cron} due at {check.due.isoformat()}",
                    {names.SCHEDULED_TIME: check.due.isoformat()},
                )
            )
            if check.missed > triggers.TOO_MANY_MISSED:
                ctx.event(
                    EventReason.MISSED_SCHEDULES,
                    f"more than {triggers.TOO_MANY_MISSED} missed schedules; only the most recent starts",
                    warning=True,
                )
        elif check.late is not None:
            message = f"the run due at {check.late.isoformat()} passed its startingDeadlineSeconds; {message}"
        old = previous.get("schedule")
        statuses.append(
            TriggerStatus(
                type="schedule",
                firing=check.due is not None,
                message=message[:256],
                last_evaluation_time=now,
                next_time=next_schedule,
                last_fired_time=old.last_fired_time if old else None,
            )
        )
    if t.drift is not None:
        status = _prom(
            "drift",
            previous,
            now,
            lambda: triggers.drift(
                t.drift,
                prometheus.query(triggers.drift_query(namespace, spec.model_deployment)),
                previous.get("drift"),
                now,
            ),
        )
        statuses.append(status)
        if status.firing:
            firings.append(Firing("drift", now, f"{status.value:.4g}", status.message or "drift"))
    for q in t.quality:
        type = f"quality/{q.name}"
        status = _prom(
            type,
            previous,
            now,
            lambda q=q, type=type: triggers.quality(q, prometheus.query(q.query), previous.get(type), now),
        )
        statuses.append(status)
        if status.firing:
            firings.append(Firing(type, now, f"{status.value:.4g}", status.message or type))
    if t.feedback is not None:
        every, negative = triggers.feedback_queries(namespace, spec.model_deployment, t.feedback, champion)
        status = _prom(
            "feedback",
            previous,
            now,
            lambda: triggers.feedback(
                t.feedback, prometheus.query(every), prometheus.query(negative), previous.get("feedback"), now
            ),
        )
        statuses.append(status)
        if status.firing:
            firings.append(Firing("feedback", now, f"{status.value:.4g}", status.message or "feedback"))
    if t.new_data is not None:
        marker = consumed
        try:
            data_credentials = secrets.credentials(
                ctx.applier.kube, namespace, t.new_data.location, "spec.triggers.newData.location"
            )
            where = "spec.triggers.newData.location"
            keys = list(ctx.open_store(t.new_data.location, data_credentials, where).list())
            status, data_marker = triggers.new_data(
                keys, marker, t.new_data.min_new_objects, previous.get("newData"), now
            )
        except Exception as e:
            status = triggers.error(
                "newData",
                f"cannot list {t.new_data.location.uri}: {describe(e)}",
                previous.get("newData"),
                now,
            )
        statuses.append(status)
        if status.firing:
            firings.append(Firing("newData", now, f"{status.value:.0f}", status.message or "newData"))
    requested = (policy["metadata"].get("annotations") or {}).get(MANUAL_TRIGGER_ANNOTATION)
    answered = {(c["metadata"].get("annotations") or {}).get(names.MANUAL) for c in children} | {
        before.manual_request
    }
    manual_request = before.manual_request
    if requested:
        pending = requested not in answered
        old = previous.get("manual")
        statuses.append(
            TriggerStatus(
                type="manual",
                firing=pending,
                last_evaluation_time=now,
                message=f"{MANUAL_TRIGGER_ANNOTATION}={requested[:64]}"
                + (" asks for a run" if pending else " answered"),
                last_fired_time=old.last_fired_time if old else None,
            )
        )
        if pending:
            firings.append(
                Firing(
                    "manual",
                    now,
                    requested[:256],
                    f"{MANUAL_TRIGGER_ANNOTATION}={requested[:64]}",
                    {names.MANUAL: requested[:1024]},
                )
            )

    # -- start a run -------------------------------------------------------------------------
    # Runs whose TrainingJob the history limits deleted still count for the cooldown.
    gone = [
        plan.Run(r.training_job, r.phase, r.start_time, r.trigger, True)
        for r in records
        if r.start_time is not None and all(r.training_job != run.name for run in runs)
    ]
    decision = plan.decide(spec, name, firings, runs + gone, now)
    last_trigger = before.last_trigger
    if decision.why_not:
        notes.append(decision.why_not)
    if decision.start is not None:
        firing = decision.start
        for active in decision.replace:
            ctx.applier.delete(API_VERSION, TRAINING_JOB.kind, active, namespace)
            notes.append(f"{active} replaced (concurrencyPolicy Replace)")
        if spec.triggers.new_data is not None and data_marker is None:
            data_marker = consumed
        extra = {names.DATA_MARKER: data_marker} if data_marker else {}
        consumed = data_marker or consumed
        firing = dataclasses.replace(firing, annotations={**firing.annotations, **extra})
        sampling = md.gateway.payload_sampling
        traffic = sampling.destination if sampling is not None else None
        manifest = builders.training_job(policy, spec, firing, champion, traffic)
        if person := (policy["metadata"].get("annotations") or {}).get(REQUESTED_BY):
            # The run is asked for on behalf of whoever last asked the policy: its records say so.
            manifest["metadata"].setdefault("annotations", {})[REQUESTED_BY] = person
        job = manifest["metadata"]["name"]
        created = ctx.applier.create(manifest)
        if created:
            ctx.event(
                EventReason.TRIGGERED,
                f"{firing.message}: started {job}"[:1024],
                model=model,
                details={"trainingJob": job, "trigger": firing.type},
            )
        last_trigger = f"{firing.type} at {firing.at.isoformat()}: {firing.message}"[:256]
        if firing.family == "schedule":
            last_schedule = firing.at
        if firing.family == "manual":
            manual_request = firing.value
        statuses = [triggers.fired(s, now) if s.type == firing.type else s for s in statuses]
        if not any(r.training_job == job for r in records):
            records.insert(
                0,
                RunRecord(
                    training_job=job,
                    trigger=firing.type,
                    trigger_value=firing.value[:256],
                    start_time=now,
                    phase="Pending",
                    verdict="Training",
                ),
            )
        runs.append(plan.Run(job, "Pending", now, firing.type, False))

    # -- promotion ---------------------------------------------------------------------------
    by_name = {c["metadata"]["name"]: c for c in children}
    approved = (policy["metadata"].get("annotations") or {}).get(APPROVAL_ANNOTATION)
    last_promoted = before.last_promoted_version
    for i, record in enumerate(records):
        if record.verdict not in (None, "Training") or record.phase not in ("Succeeded", "Failed"):
            continue
        child = by_name.get(record.training_job)
        if record.phase == "Failed":
            message = (child or {}).get("status", {}).get("message") or "the TrainingJob failed"
            records[i] = record.model_copy(update={"verdict": "Failed", "message": message[:256]})
            continue
        records[i] = record = promotion.judged(spec.promotion.metrics, record, child)
        if record.verdict == "Lost":
            ctx.event(
                EventReason.NOT_PROMOTED,
                f"{record.training_job}: {record.message}"[:1024],
                model=model,
                version=record.version,
            )
        elif record.verdict == "Won":
            ctx.event(
                EventReason.COMPARED,
                f"{record.training_job}: {record.message}"[:1024],
                model=model,
                version=record.version,
            )
    # One version at a time goes out: the one in flight, else the newest winner.
    in_flight = next((r for r in records if r.verdict in promotion.IN_FLIGHT), None)
    target = in_flight or next((r for r in records if r.verdict == "Won"), None)
    for i, record in enumerate(records):
        if record is target:
            step = promotion.step(
                record,
                spec.promotion,
                champion=champion,
                challenger=challenger,
                canary=md_status.canary,
                approved=approved,
                busy=None,
            )
            if step.move is not None:
                moved = registry.move_alias(
                    store,
                    model,
                    step.move.alias,
                    step.move.version,
                    by=f"retrainpolicy/{namespace}/{name}",
                    reason=step.move.reason,
                    move_id=names.move_id(namespace, record.training_job, step.move.step),
                )
                ctx.event(
                    EventReason.ALIAS_MOVED,
                    f"{model}@{moved.alias}: {moved.previous} -> {moved.version} ({moved.reason})"[:1024],
                    model=model,
                    version=moved.version,
                    details={"alias": moved.alias, "previous": moved.previous, "moveId": moved.move_id},
                )
                if step.move.alias == spec.promotion.champion_alias:
                    champion = step.move.version
                else:
                    challenger = step.move.version
            if step.verdict == "Promoted":
                last_promoted = record.version
                ctx.event(EventReason.PROMOTED, step.message[:1024], model=model, version=record.version)
            if step.verdict == "RolledBack":
                ctx.event(
                    EventReason.ROLLED_BACK,
                    step.message[:1024],
                    warning=True,
                    model=model,
                    version=record.version,
                )
            records[i] = record.model_copy(update={"verdict": step.verdict, "message": step.message[:256]})
        elif record.verdict == "Won" and target is not None:
            why = "in its canary" if target.verdict == "Canary" else "going out"
            records[i] = record.model_copy(update={"message": f"waits: {target.training_job} is {why}"})

    # -- history limits ----------------------------------------------------------------------
    holding = {r.training_job for r in records if r.verdict in (*promotion.IN_FLIGHT, "Won")}
    for old in plan.pruned(runs, spec.successful_runs_history_limit, spec.failed_runs_history_limit, holding):
        ctx.applier.delete(API_VERSION, TRAINING_JOB.kind, old, namespace)

    active = sorted(r.name for r in runs if not r.finished)
    found = fold.Found(
        now=now,
        triggers=statuses,
        runs=records,
        active=active,
        last_schedule_time=last_schedule
        if last_schedule != fold.created(policy)
        else before.last_schedule_time,
        last_trigger=last_trigger,
        champion=champion,
        last_promoted=last_promoted,
        manual_request=manual_request,
        next_schedule=next_schedule,
        data_marker=consumed,
        notes=notes,
    )
    return fold.fold(spec, found, settings.evaluate_every)


def _prom(type: str, previous: dict[str, TriggerStatus], now: dt.datetime, read: Any) -> TriggerStatus:
    try:
        return read()
    except Exception as e:  # Prometheus away or a bad query: say so, do not fire
        return triggers.error(type, f"Prometheus: {describe(e)}", previous.get(type), now)
