"""The TrainingJob reconcile: the only I/O of the kind. Read the facts, let the pure modules decide
(plan.py: which run, what to do on the Ray Jobs API; builders.py: the RayJob), act, fold (fold.py).

Two runtimes:
- `kuberay` (default): one KubeRay RayJob per TrainingJob, owned by it (deleted with it by the
  garbage collector). Its status changes re-run the reconcile (a watched child); while the job
  runs, a resync every few seconds folds the workload's progress in.
- `rayJobsAPI`: a submission to an existing Ray cluster through the Ray Jobs API (rayjobs_api.py),
  under a deterministic submission id (names.py), stopped on suspend and on deletion (the only case
  that needs our finalizer: nothing in Kubernetes owns that job).

Progress and results come from the run report (report.json) the workload writes into its work
folder (see llmops.workload for why a report object in storage).

A run is fixed once it has started (plan.py says what that means); a finished run stays finished:
re-create the TrainingJob to run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import os
from pathlib import Path

import kopf
import pydantic

from llmops import registry
from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.api.trainingjob import EventReason, Reason, TrainingJobSpec, TrainingJobStatus
from llmops.operators import retention, secrets
from llmops.operators.kube import Conflict
from llmops.operators.manifests import adopt
from llmops.operators.outcome import Outcome
from llmops.operators.registry_access import describe, refused
from llmops.operators.runtime import Context
from llmops.operators.trainingjob import builders, fold, names, plan, rayjobs_api
from llmops.storage import Credentials
from llmops.workload import REPORT, JobIdentity, RunReport, TrainingRun, work_dir_for

RUNNING_RESYNC_SECONDS = 10.0  # how often progress is read while a run is going
WAITING_RESYNC_SECONDS = 60.0  # level-based safety net while waiting for the runtime
UNAVAILABLE_RETRY_SECONDS = 30.0
CLEANUP_RETRIES = 5
# Steps on the Ray Jobs API in one reconcile: a submission, then (it failed at once) its retry.
MAX_JOBS_API_STEPS = 2


def code_version() -> str:
    try:
        return importlib.metadata.version("llmops")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def trainer_image(spec: TrainingJobSpec) -> str:
    """spec.runtime.image, else the operator's setting ($LLMOPS_OPTIMIZER_IMAGE for method quantize,
    $LLMOPS_TRAINER_IMAGE for the others), else the release's (builders.default_image)."""
    method = spec.method.type
    setting = "LLMOPS_OPTIMIZER_IMAGE" if method == "quantize" else "LLMOPS_TRAINER_IMAGE"
    return spec.runtime.image or os.environ.get(setting) or builders.default_image(code_version(), method)


def _status(ctx: Context) -> TrainingJobStatus:
    """The TrainingJob's status before this reconcile (the runtime parsed it)."""
    assert isinstance(ctx.status, TrainingJobStatus)
    return ctx.status


def desired_run(
    spec: TrainingJobSpec, ctx: Context, job: JobIdentity, earlier: TrainingRun | None
) -> TrainingRun | Outcome:
    """The run for the current spec, with `spec.model.base`, `spec.evaluation.baseline` and
    `spec.method.distillation.teacher` pinned to versions; or why not."""
    version = plan.pinned_base(spec, earlier)
    if spec.model.base is not None and version is None:
        resolved = _resolve(spec, ctx, spec.model.base, "spec.model.base", Reason.BASE_MODEL_NOT_FOUND)
        if isinstance(resolved, Outcome):
            return resolved
        if spec.method.type == "quantize" and (why := plan.not_quantizable(resolved.described)):
            message = (
                f"spec.model.base ({spec.model.base.name}:{resolved.version}) cannot be quantized: {why};"
                " name an unquantized full model (its parent, if it was compressed before, or the"
                " original imported with `llmops models import`)"
            )
            return _waiting(Reason.BASE_NOT_QUANTIZABLE, message)
        version = resolved.version
    baseline = spec.evaluation.baseline if spec.evaluation else None
    baseline_version = plan.pinned_baseline(spec, earlier)
    if baseline is not None and baseline_version is None:
        resolved = _resolve(spec, ctx, baseline, "spec.evaluation.baseline", Reason.BASELINE_NOT_FOUND)
        if isinstance(resolved, Outcome):
            return resolved
        baseline_version = resolved.version
    teacher = spec.method.distillation.teacher if spec.method.distillation else None
    teacher_version = plan.pinned_teacher(spec, earlier)
    if teacher is not None and teacher_version is None:
        resolved = _resolve(spec, ctx, teacher, "spec.method.distillation.teacher", Reason.TEACHER_NOT_FOUND)
        if isinstance(resolved, Outcome):
            return resolved
        teacher_version = resolved.version
    return plan.new_run(spec, job, version, code_version(), baseline_version, teacher_version)


def _waiting(reason: str, message: str) -> Outcome:
    """Stalled before the run: looked at again every WAITING_RESYNC_SECONDS, a retry (the runtime paces
    them: a Secret may appear, a version be registered)."""
    return Outcome("stalled", "Pending", reason, message, requeue_after=WAITING_RESYNC_SECONDS, retry=True)


def _credentials(spec: TrainingJobSpec, ctx: Context) -> Credentials | None:
    """The registry's access keys (the work folder lives in the registry); raises SecretProblem."""
    return secrets.credentials(ctx.applier.kube, ctx.namespace, spec.output.registry, "spec.output.registry")


def _resolve(
    spec: TrainingJobSpec, ctx: Context, ref: ModelReference, field: str, not_found: str
) -> registry.ModelVersion | Outcome:
    """The version `ref` (the spec's `field`) names in the registry now, or why it cannot be known."""
    try:
        store = ctx.open_store(spec.output.registry, _credentials(spec, ctx), "spec.output.registry")
        return registry.resolve(store, ref)
    except secrets.SecretProblem as e:
        return _waiting(Reason.CREDENTIALS_NOT_FOUND, str(e))
    except registry.RegistryError as e:
        which = f"version {ref.version}" if ref.version else f"alias {ref.alias}"
        message = (
            f"{field} ({ref.name}, {which}) does not resolve: {e}; register that model "
            f"(or point the alias at a version) or fix {field}"
        )
        return _waiting(not_found, message)
    except Exception as e:
        if refused(e):  # refused credentials, access denied, a missing bucket, TLS: a person must act
            registry_uri = spec.output.registry.uri
            message = f"cannot read the model registry {registry_uri} to resolve {field}: {describe(e)}"
            return _waiting(Reason.STORAGE_REFUSED, message)
        # the registry is unreachable: that heals
        message = (
            f"cannot read the model registry {spec.output.registry.uri} to resolve "
            f"{field} ({describe(e)}); retrying"
        )
        return Outcome(
            "reconciling",
            "Pending",
            Reason.REGISTRY_UNAVAILABLE,
            message,
            requeue_after=UNAVAILABLE_RETRY_SECONDS,
            retry=True,
        )


def read_report(
    work_dir: ObjectStorageLocation, credentials: Credentials | None, ctx: Context
) -> tuple[RunReport | None, str | None]:
    """(report, None), (None, None) when there is none yet, or (None, why it could not be read)."""
    if work_dir.local:
        # A local registry must be the same directory for the Ray pods and the operator.
        root = Path(work_dir.local.path).parents[3]  # <registry>/jobs/<namespace>/<name>/<uid>
        if not root.is_dir():
            return None, (
                f"the operator cannot see the local registry {root}: mount it into the operator "
                "as well, or use an S3 registry"
            )
    try:
        store = ctx.open_store(work_dir, credentials, "spec.output.registry")
        if not store.exists(REPORT):
            return None, None
        return RunReport.model_validate_json(store.get_bytes(REPORT)), None
    except pydantic.ValidationError as e:
        return (
            None,
            f"{REPORT} in {work_dir.uri} is not a valid run report ({e.error_count()} errors)",
        )
    except Exception as e:
        return None, f"reading {REPORT} from {work_dir.uri} failed ({describe(e)})"


def _report(run: TrainingRun, ctx: Context) -> tuple[RunReport | None, str | None]:
    try:
        credentials = _credentials(run.spec, ctx)
    except secrets.SecretProblem as e:
        return None, str(e)
    return read_report(run.work_dir, credentials, ctx)


NOT_APPLIED = (
    " (changes to the spec made after the run started are not applied to it; re-create the "
    "TrainingJob to train with them)"
)


def _with_note(outcome: Outcome, note: str) -> Outcome:
    return dataclasses.replace(outcome, message=outcome.message + note) if note else outcome


# -- runtime: kuberay ----------------------------------------------------------------------------


def _hold_for_kueue(ctx: Context, name: str, namespace: str) -> None:
    """Keep `suspend: true` owned by a second field manager until Kueue admits the job.

    Not forced: once Kueue has set `suspend` (admitted the job), the apply conflicts and Kueue wins.
    Repeated until the run starts, so a crash between creating the RayJob and this apply is harmless.
    """
    with contextlib.suppress(Conflict):
        ctx.applier.kube.apply(
            builders.queue_hold(name, namespace), field_manager=builders.QUEUE_FIELD_MANAGER, force=False
        )


def _head_image(rayjob: dict) -> str | None:
    try:
        return rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    except (KeyError, IndexError, TypeError):
        return None


def reconcile_kuberay(spec: TrainingJobSpec, ctx: Context, job: JobIdentity) -> Outcome:
    name = names.rayjob_name(job.name, job.uid)
    existing = ctx.applier.get(builders.RAY_API_VERSION, builders.RAYJOB_KIND, name, job.namespace)
    earlier = builders.run_from_entrypoint(existing["spec"].get("entrypoint")) if existing else None
    started = bool(existing and (existing.get("status") or {}).get("startTime"))
    choice = plan.choose_run(spec, earlier, started)
    if choice.run is not None and started:
        run = choice.run  # fixed once started: its image too
        image = (_head_image(existing) if existing else None) or trainer_image(run.spec)
    elif choice.run is not None:
        run, image = choice.run, trainer_image(spec)  # a lifecycle change: the entrypoint stays as it is
    else:
        wanted = desired_run(spec, ctx, job, earlier)
        if isinstance(wanted, Outcome):
            return wanted
        run, image = wanted, trainer_image(spec)
    lifecycle = builders.lifecycle(spec, creating=existing is None)
    manifest = adopt(builders.rayjob(run, lifecycle, name=name, image=image), ctx.body)
    queued = bool(run.spec.runtime.queue_name) and not started
    if queued and existing is not None:
        _hold_for_kueue(ctx, name, job.namespace)  # before our apply lets go of `suspend`
    applied = ctx.applier.apply(manifest)
    if queued and existing is None:
        _hold_for_kueue(ctx, name, job.namespace)
    observation = fold.observe_rayjob(applied.get("status"))
    report, report_error = (None, None)
    if observation.state not in ("none", "pending", "suspended") or observation.start_time:
        report, report_error = _report(run, ctx)
    facts = fold.Facts(
        suspend=spec.suspend,
        observation=observation,
        report=report,
        report_error=report_error,
        where=f"RayJob {name}",
        work_dir=run.work_dir.uri,
        queue=run.spec.runtime.queue_name,
        phase=_status(ctx).phase,
        extra={"ray_job_name": name, "submission_id": (applied.get("status") or {}).get("jobId") or None},
    )
    outcome = _with_note(fold.fold(facts, dt.datetime.now(dt.UTC)), NOT_APPLIED if choice.changed else "")
    return _requeued(outcome, {"Running": RUNNING_RESYNC_SECONDS, "Pending": WAITING_RESYNC_SECONDS})


# -- runtime: rayJobsAPI -------------------------------------------------------------------------


def reconcile_jobs_api(spec: TrainingJobSpec, ctx: Context, job: JobIdentity) -> Outcome:
    """Read the Ray job, then plan.plan_jobs_api decides and this acts (at most MAX_JOBS_API_STEPS)."""
    address = spec.runtime.address
    assert address is not None  # CEL: address is required for rayJobsAPI
    status = _status(ctx)
    submission = status.submission_id
    now = dt.datetime.now(dt.UTC)
    report: RunReport | None = None
    report_error: str | None = None
    try:
        api = rayjobs_api.connect(address)
        info = api.get(submission) if submission else None
        if info is None and not submission:
            # An earlier operator may have submitted and stopped before recording it.
            found = api.find(names.UID_METADATA, job.uid)
            if found:
                info = found[-1]
                submission = info["submission_id"]
        run = builders.run_from_entrypoint(info.get("entrypoint")) if info else None
        assert info is None or run is not None, "a Ray job under our id that does not run a TrainingRun"
        observation = fold.observe_ray_job(info) if info else None
        read = False
        for _ in range(MAX_JOBS_API_STEPS):
            if run is not None and observation is not None and not read and plan.needs_report(observation):
                report, report_error = _report(run, ctx)
                read = True
            action = plan.plan_jobs_api(observation, submission, status.phase, report, spec, job, now)
            if action.kind == "hold":
                return Outcome(
                    "reconciling",
                    "Suspended",
                    Reason.SUSPENDED,
                    "spec.suspend is true: nothing is submitted; set it to false to start",
                    {"submission_id": None},
                )
            if action.kind == "fold":
                break
            assert action.submission is not None
            if action.kind == "stop":
                api.stop(action.submission)
                observation = action.observation
                continue
            if run is None:  # the first submission: the run is made now
                wanted = desired_run(spec, ctx, job, None)
                if isinstance(wanted, Outcome):
                    return wanted
                run = wanted
            submission = action.submission
            api.submit(submission, builders.entrypoint(run), names.submission_metadata(job))
            observation = fold.observe_ray_job(api.get(submission) or {"status": "PENDING"})
            if action.why == "retry":
                break  # one retry per reconcile; the report read before it is the one folded
            report, report_error, read = None, None, False  # a new job: its report is read afresh
        assert submission is not None and run is not None and observation is not None
        if not read and plan.needs_report(observation):
            report, report_error = _report(run, ctx)
    except rayjobs_api.RayUnavailable as e:
        rayjobs_api.forget(address)
        return Outcome(
            "reconciling",
            status.phase or "Pending",
            Reason.RAY_UNAVAILABLE,
            f"{e}; retrying",
            {"submission_id": status.submission_id},  # only what is known to exist
            requeue_after=UNAVAILABLE_RETRY_SECONDS,
            retry=True,
        )
    note = "" if builders.same_training(run.spec, spec) else NOT_APPLIED
    facts = fold.Facts(
        suspend=spec.suspend,
        observation=observation,
        report=report,
        report_error=report_error,
        where=f"Ray job {submission} at {address}",
        work_dir=run.work_dir.uri,
        phase=status.phase,
        extra={"submission_id": submission},
    )
    outcome = _with_note(fold.fold(facts, now), note)
    outcome = _requeued(outcome, {"Running": RUNNING_RESYNC_SECONDS, "Pending": RUNNING_RESYNC_SECONDS})
    left = plan.deadline_left(spec, observation, now)  # the Ray Jobs API has no deadline of its own
    return outcome if left is None else outcome.sooner(max(left, 1.0))


def _requeued(outcome: Outcome, polls: dict[str, float]) -> Outcome:
    """`outcome` with its requeue: a retry after UNAVAILABLE_RETRY_SECONDS when the run's report could
    not be read, else the poll of its phase (`polls`: seconds by phase, paced by the runtime when many
    jobs poll at once: runtime.poll_after; none for the other phases)."""
    if outcome.reason == Reason.REPORT_UNAVAILABLE:
        return dataclasses.replace(outcome, requeue_after=UNAVAILABLE_RETRY_SECONDS, retry=True)
    after = polls.get(outcome.phase)
    return dataclasses.replace(outcome, requeue_after=after, poll=after is not None)


def finalize(spec: TrainingJobSpec, ctx: Context) -> None:
    """Stop what this TrainingJob runs on a cluster we do not own; never touch the registry."""
    if spec.runtime.type != "rayJobsAPI" or spec.runtime.address is None:
        return
    address, uid = spec.runtime.address, ctx.body["metadata"]["uid"]
    recorded = _status(ctx).submission_id
    try:
        api = rayjobs_api.connect(address)
        jobs = [api.get(recorded)] if recorded else api.find(names.UID_METADATA, uid)
        for info in jobs:
            if info and info.get("status") in ("PENDING", "RUNNING"):
                api.stop(info["submission_id"])
                ctx.logger.info(f"stopped Ray job {info['submission_id']} at {address}")
    except rayjobs_api.RayUnavailable as e:
        rayjobs_api.forget(address)
        if ctx.retry < CLEANUP_RETRIES:
            raise kopf.TemporaryError(f"{e}; retrying before the TrainingJob is deleted", delay=10) from e
        ctx.event(
            EventReason.CLEANUP_FAILED,
            f"could not stop the Ray job {recorded or f'of uid {uid}'} at {address} ({e}); deleting the "
            "TrainingJob anyway: stop the job by hand (ray job stop)",
            warning=True,
        )


# -- the kind ------------------------------------------------------------------------------------


def reconcile(spec: TrainingJobSpec, ctx: Context) -> Outcome:
    """The TrainingJob's outcome; the runtime writes it and posts the Events it calls for."""
    if fold.finished(_status(ctx)):
        work_dir = work_dir_for(spec.output.registry, builders.identity(ctx.body))
        targets = retention.work_dir_targets(
            work_dir, spec.output.work_data_retention_days, spec.output.checkpoint_retention_days
        )
        return retention.reconciled(
            ctx, "TrainingJob", targets, _status(ctx).retention, fold.kept(_status(ctx))
        )
    job = builders.identity(ctx.body)
    problem = builders.problems(spec)
    if problem is not None:
        return Outcome("stalled", "Failed", *problem)
    if spec.runtime.type == "rayJobsAPI":
        return reconcile_jobs_api(spec, ctx, job)
    return reconcile_kuberay(spec, ctx, job)


def needs_cleanup(body: dict) -> bool:
    """Whether a TrainingJob gets the finalizer: only its Ray Jobs API runs live outside Kubernetes."""
    return ((body.get("spec") or {}).get("runtime") or {}).get("type") == "rayJobsAPI"
