"""The ModelRetirement reconcile: the only I/O of the kind. Read the facts (the registry, the
ModelDeployments of the namespace, Prometheus), let plan.py decide, run the next step, fold.

One step per reconcile, in order (Drain, Archive, Delete, Dispose, Report); a finished step is
recorded in status and the next reconcile starts the next one. Crash safety does not rest on status:
every step can run again from the start and finishes what a crash cut short. The archive resumes and
re-verifies; the delete writes the tombstone first and refuses without a verified archive
(llmops/archive.py checks the receipt against the archive itself); disposal deletes only what is still
there; the report is rewritten whole.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pydantic

from llmops import archive, audit, conditions, records, registry
from llmops.api import API_VERSION, MODEL_DEPLOYMENT
from llmops.api.common import ObjectStorageLocation
from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from llmops.api.modelretirement import (
    APPROVAL_ANNOTATION,
    DataLocation,
    EventReason,
    ModelRetirementSpec,
    ModelRetirementStatus,
    PlannedAction,
    Reason,
    StepStatus,
)
from llmops.operators import secrets
from llmops.operators.modeldeployment.drift import drift_destination, drift_on
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modelretirement import fold, names, plan, postmortem
from llmops.operators.outcome import Outcome
from llmops.operators.prometheus import Prometheus
from llmops.operators.registry_access import describe, refused, transient
from llmops.operators.runtime import Context
from llmops.storage import ObjectLock, ObjectLockUnavailable, ObjectStore
from llmops.workload import REPORT

DRY_RUN_REFRESH_SECONDS = 30.0
# Who applied and who last changed the object, stamped by the admission webhook (never by the user).
REQUESTED_BY_ANNOTATION = "llmops.io/requested-by"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The operator's settings for ModelRetirements: the Prometheus the deployments use."""

    prometheus_url: str = ServingSettings.prometheus_url

    @classmethod
    def from_env(cls) -> Settings:
        return cls(prometheus_url=ServingSettings.from_env().prometheus_url)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Reconciler:
    """The kind's reconcile with its settings; `prometheus` and `clock` are the operator's own unless
    a test gives others."""

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

    def __call__(self, spec: ModelRetirementSpec, ctx: Context) -> Outcome:
        return Retirement(spec, ctx, self.prometheus, self.clock()).run()


@dataclasses.dataclass
class Served:
    """A ModelDeployment of the namespace, parsed (plan.Served) with its body."""

    body: dict
    view: plan.Served


class Retirement:
    """One reconcile of one ModelRetirement."""

    def __init__(self, spec: ModelRetirementSpec, ctx: Context, prometheus: Any, now: dt.datetime) -> None:
        self.spec, self.ctx, self.prometheus, self.now = spec, ctx, prometheus, now
        before = ctx.status
        assert isinstance(before, ModelRetirementStatus)
        self.before = before
        self.steps = list(before.steps)
        self.status: dict[str, Any] = {}
        self.model = spec.model.name
        self.actor = f"modelretirement/{ctx.namespace}/{ctx.name}"

    # -- the shared facts ---------------------------------------------------------------------

    def store(self, location: ObjectStorageLocation, field: str) -> ObjectStore:
        credentials = secrets.credentials(self.ctx.applier.kube, self.ctx.namespace, location, field)
        return self.ctx.open_store(location, credentials, field)

    def deployments(self) -> list[Served]:
        found = []
        for body in self.ctx.applier.list(API_VERSION, MODEL_DEPLOYMENT.kind, self.ctx.namespace):
            try:
                spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
                status = ModelDeploymentStatus.model_validate(body.get("status") or {})
            except pydantic.ValidationError:
                continue  # a deployment the operator cannot read serves nothing it could drain
            found.append(Served(body, plan.Served(body["metadata"]["name"], spec, status)))
        return found

    def versions(self, source: ObjectStore) -> list[str]:
        """The versions this retirement covers, fixed at its first reconcile (a version registered
        later is not retired by a whole-model retirement applied earlier)."""
        if self.before.versions:
            return list(self.before.versions)
        if self.spec.model.version is not None:
            return [self.spec.model.version]
        return registry.versions(source, self.model)

    def record(self, update: StepStatus) -> None:
        self.steps = plan.merged(self.steps, update)
        self.status["steps"] = self.steps

    def current(self, name: str) -> StepStatus | None:
        return next((s for s in self.steps if s.name == name), None)

    # -- the reconcile --------------------------------------------------------------------------

    def run(self) -> Outcome:
        spec, ctx = self.spec, self.ctx
        annotations = ctx.body["metadata"].get("annotations") or {}
        try:
            source = self.store(spec.registry, "spec.registry")
            target = self.store(spec.archive.location, "spec.archive.location")
        except secrets.SecretProblem as e:
            return fold.stalled(Reason.CREDENTIALS_NOT_FOUND, str(e))
        try:
            versions = self.versions(source)
            missing = [v for v in versions if not self.registered_or_retired(source, v)]
        except Exception as e:
            return self.storage_problem(e)
        if not versions or missing:
            what = f"version {', '.join(missing)} of" if missing else "no version of"
            return fold.stalled(
                Reason.VERSION_NOT_FOUND,
                f"spec.model: the registry {spec.registry.uri} has {what} model {self.model!r}",
            )
        self.versions_ = versions
        self.archive_target = target
        self.status["versions"] = versions
        if not self.before.versions:
            self.manifests = {v: m for v in versions if (m := self.manifest(source, v)) is not None}
            self.status["produced_by"] = sorted(
                {m.lineage.parent_job for m in self.manifests.values() if m.lineage.parent_job}
            )
        if self.before.requested_by is None and annotations.get(REQUESTED_BY_ANNOTATION):
            self.status["requested_by"] = annotations[REQUESTED_BY_ANNOTATION]
        requested_by = self.status.get("requested_by", self.before.requested_by)

        if spec.dry_run:
            return self.dry_run(source)

        if spec.require_approval and self.before.approved_by is None:
            approval = annotations.get(APPROVAL_ANNOTATION)
            approver = annotations.get(REQUESTED_BY_ANNOTATION)
            if not approval:
                return Outcome(
                    "reconciling",
                    "AwaitingApproval",
                    Reason.AWAITING_APPROVAL,
                    f"waiting for a second person to set the annotation {APPROVAL_ANNOTATION}",
                    status=self.status,
                )
            if approver is None or requested_by is None:
                return fold.stalled(
                    Reason.SELF_APPROVAL,
                    f"{APPROVAL_ANNOTATION} is set, but who applied and who approved is unknown: approval"
                    " needs the operator's admission webhook (webhook.enabled in the chart), which records"
                    f" both in {REQUESTED_BY_ANNOTATION}",
                    "AwaitingApproval",
                    self.status,
                )
            if approver == requested_by:
                return fold.stalled(
                    Reason.SELF_APPROVAL,
                    f"{APPROVAL_ANNOTATION} was set by {approver}, who applied the retirement: a second"
                    " person must approve it",
                    "AwaitingApproval",
                    self.status,
                )
            self.status["approved_by"] = approver

        step = plan.next_step(self.steps)
        if step is None:
            return fold.retired(self.steps, self.status)
        try:
            return {
                "Drain": lambda: self.drain(source),
                "Archive": lambda: self.archive(source, target),
                "Delete": lambda: self.delete(source, target),
                "Dispose": lambda: self.dispose(source),
                "Report": lambda: self.report(source),
            }[step]()
        except secrets.SecretProblem as e:
            return fold.stalled(Reason.CREDENTIALS_NOT_FOUND, str(e), fold.PHASE_OF_STEP[step], self.status)
        except archive.BrokenReceipt as e:  # the same bytes on every read: a person must look at it
            return fold.stalled(
                Reason.ARCHIVE_FAILED,
                f"{e}: nothing is deleted without a verified archive; repair or remove the receipt"
                " (the archive is then made or verified again)",
                fold.PHASE_OF_STEP[step],
                self.status,
            )
        except registry.RegistryError as e:
            return fold.stalled(Reason.VERSION_NOT_FOUND, str(e), fold.PHASE_OF_STEP[step], self.status)
        except Exception as e:
            if refused(e):  # refused credentials, access denied, a missing bucket, TLS: a person must act
                return fold.stalled(
                    Reason.STORAGE_REFUSED,
                    f"storage refused during {step.lower()}: {describe(e)}",
                    fold.PHASE_OF_STEP[step],
                    self.status,
                )
            if not transient(e):
                raise
            return fold.running(
                step,
                f"storage failed during {step.lower()} ({describe(e)}); retrying, resuming where it stopped",
                self.status,
                reason=Reason.REGISTRY_UNAVAILABLE,
                requeue=30.0,
                retry=True,
            )

    def manifest(self, source: ObjectStore, version: str) -> registry.ModelVersion | None:
        try:
            return registry.read_version(source, self.model, version)
        except registry.RegistryError:
            return None  # retired already: its manifest is in the archive

    def registered_or_retired(self, source: ObjectStore, version: str) -> bool:
        try:
            registry.read_version(source, self.model, version)
            return True
        except registry.VersionRetired:
            return True
        except registry.RegistryError:
            return False

    def storage_problem(self, error: Exception) -> Outcome:
        if refused(error):
            return fold.stalled(
                Reason.STORAGE_REFUSED,
                f"cannot read the registry {self.spec.registry.uri}: {describe(error)}",
                self.before.phase or "Pending",
                self.status,
            )
        return Outcome(
            "reconciling",
            self.before.phase or "Pending",
            Reason.REGISTRY_UNAVAILABLE,
            f"cannot read the registry {self.spec.registry.uri} ({describe(error)}); retrying",
            status=self.status,
            requeue_after=30.0,
            retry=True,
        )

    # -- dry run --------------------------------------------------------------------------------

    def dry_run(self, source: ObjectStore) -> Outcome:
        actions: list[PlannedAction] = []
        aliases = registry.aliases(source, self.model)
        drain = plan.drain(self.spec, set(self.versions_), [d.view for d in self.deployments()], aliases)
        if drain.problem is not None:
            actions.append(PlannedAction(step="Drain", action=f"refused: {drain.problem[1]}"))
        for a in drain.actions:
            actions.append(PlannedAction(step="Drain", action=f"ModelDeployment {a.deployment}: {a.detail}"))
        if not drain.actions and drain.problem is None:
            actions.append(PlannedAction(step="Drain", action="nothing serves the retired versions"))
        for version in self.versions_:
            keys = list(source.list(registry.version_prefix(self.model, version)))
            where = f"{self.spec.archive.location.uri}/{registry.version_prefix(self.model, version)}"
            lock = self.spec.archive.retention
            locked = f", Object Lock {lock.mode} {lock.days} days" if lock else ""
            actions.append(
                PlannedAction(
                    step="Archive",
                    action=f"copy and verify {len(keys)} objects of {version} to {where}{locked}",
                )
            )
            if self.spec.delete.artifacts:
                actions.append(
                    PlannedAction(
                        step="Delete", action=f"delete {len(keys)} objects of {version}; a tombstone stays"
                    )
                )
        if (
            self.spec.drain is not None
            and self.spec.drain.mode == "Suspend"
            and self.spec.delete.model_deployments
        ):
            for a in drain.actions:
                actions.append(PlannedAction(step="Delete", action=f"delete ModelDeployment {a.deployment}"))
        kinds = [k for k, on in self.disposal_kinds().items() if on]
        actions.append(
            PlannedAction(
                step="Dispose", action="delete the versions' records in " + (", ".join(kinds) or "nothing")
            )
        )
        report = names.report_location(
            self.spec.report.destination, self.spec.archive.location, self.model, self.versions_
        )
        actions.append(PlannedAction(step="Report", action=f"write the post-mortem to {report.uri}"))
        self.status["plan"] = actions[:64]
        return Outcome(
            "ready",
            "DryRun",
            Reason.DRY_RUN,
            f"dry run: {len(actions)} planned actions in status.plan; set spec.dryRun false to retire",
            status=self.status,
            requeue_after=DRY_RUN_REFRESH_SECONDS,  # the plan follows what serves the version now
            poll=True,
        )

    # -- 1. drain -------------------------------------------------------------------------------

    def drain(self, source: ObjectStore) -> Outcome:
        spec, ctx = self.spec, self.ctx
        served = self.deployments()
        aliases = registry.aliases(source, self.model)
        decided = plan.drain(spec, set(self.versions_), [d.view for d in served], aliases)
        before = self.current("Drain")
        if decided.problem is not None:
            return fold.stalled(*decided.problem, "Draining", self.status)
        if spec.drain is None:  # nothing serves it: nothing to drain
            self.record(fold.step("Drain", "Skipped", before, self.now, "no ModelDeployment serves it"))
            return fold.running("Archive", "nothing to drain", self.status)
        self.remember(served)
        started = self.before.drain_start_time or self.now
        self.status["drain_start_time"] = started
        acted = set(self.before.drained_deployments)
        bodies = {d.view.name: d.body for d in served}
        for action in decided.actions:
            acted.add(action.deployment)
            if action.kind == "move-alias":
                self.move_alias(action, bodies[action.deployment])
            elif action.kind == "patch-model":
                self.patch(action.deployment, {"spec": {"model": self.replacement_ref()}})
            elif action.kind == "suspend":
                self.patch(action.deployment, {"spec": {"suspend": True}})
        if acted - set(self.before.drained_deployments):
            ctx.event(
                EventReason.DRAIN_STARTED,
                f"draining {', '.join(self.versions_)} from {', '.join(sorted(acted))}: "
                + "; ".join(a.detail for a in decided.actions if a.kind != "wait"),
            )
        self.status["drained_deployments"] = sorted(acted)[:64]
        if decided.actions:
            self.record(fold.step("Drain", "Running", before, self.now, decided.actions[0].detail))
            return fold.running(
                "Drain",
                "; ".join(a.detail for a in decided.actions)[:1024],
                self.status,
                requeue=fold.POLL_SECONDS,
                poll=True,
            )
        inflight = self.inflight(sorted(acted))
        grace = plan.grace_left(spec, started, self.now)
        if inflight and grace > 0:
            self.record(fold.step("Drain", "Running", before, self.now, f"{inflight:g} requests in flight"))
            return fold.running(
                "Drain",
                f"no deployment serves it; {inflight:g} requests still in flight",
                self.status,
                requeue=fold.POLL_SECONDS,
                poll=True,
            ).sooner(max(grace, 1.0))  # the grace period's end is a clock: never paced past it
        message = f"drained from {', '.join(sorted(acted)) or 'nothing'}"
        if inflight:
            message += f"; grace period over with {inflight:g} requests in flight"
        self.record(fold.step("Drain", "Succeeded", before, self.now, message))
        ctx.event(EventReason.DRAINED, message)
        return fold.running("Archive", message, self.status)

    def replacement_ref(self) -> dict[str, Any]:
        assert self.spec.drain is not None and self.spec.drain.replacement is not None
        r = self.spec.drain.replacement
        return {"name": r.name, "version": r.version, "alias": r.alias}  # a merge patch: None removes

    def move_alias(self, action: plan.DrainAction, body: dict) -> None:
        assert self.spec.drain is not None and self.spec.drain.replacement is not None and action.alias
        md = ModelDeploymentSpec.model_validate(body["spec"])
        store = self.store(md.registry, f"ModelDeployment {action.deployment} spec.registry")
        replacement = registry.resolve(store, self.spec.drain.replacement)
        registry.move_alias(
            store,
            self.model,
            action.alias,
            replacement.version,
            by=self.actor,
            reason=f"retiring {', '.join(self.versions_)}: {self.spec.reason}"[:512],
            move_id=f"retire-{self.ctx.body['metadata'].get('uid', self.ctx.name)}-{action.alias}",
        )

    def patch(self, deployment: str, body: dict) -> None:
        self.ctx.applier.kube.merge_patch(
            API_VERSION,
            MODEL_DEPLOYMENT.kind,
            deployment,
            self.ctx.namespace,
            body,
            field_manager=names.FIELD_MANAGER,
        )

    def inflight(self, deployments: list[str]) -> float:
        """Requests at the replicas of the retired versions, over the deployments drained; 0 when
        Prometheus does not know (a gateway that never served it, or no Prometheus)."""
        total = 0.0
        for d in deployments:
            for v in self.versions_:
                try:
                    value = self.prometheus.query(names.inflight_query(self.ctx.namespace, d, v))
                except Exception:
                    value = None
                total += value or 0.0
        return total

    def remember(self, served: list[Served]) -> None:
        """Record where every deployment of the model keeps records, before any of them may go."""
        found = {(d.deployment, d.data): d for d in self.before.data_locations}
        for d in served:
            if d.view.spec.model.name == self.model:
                for place in locations_of(d.view.name, d.view.spec):
                    found[(place.deployment, place.data)] = place
        self.status["data_locations"] = list(found.values())[:64]

    # -- 2. archive -----------------------------------------------------------------------------

    def archive(self, source: ObjectStore, target: ObjectStore) -> Outcome:
        """Copy every version to the archive and read it back by sha256 (llmops/archive.py); the
        Object Lock date is fixed at the first attempt and kept in status, so a resumed copy locks
        the same way and copies nothing twice."""
        before = self.current("Archive")
        objects = size = 0
        lock = self.lock()
        if lock is not None:
            self.status["retain_until"] = lock.retain_until
        for version in self.versions_:
            try:
                receipt = archive.archive_version(
                    source,
                    self.model,
                    version,
                    target,
                    lock=lock,
                    legal_hold=self.spec.archive.legal_hold,
                    extra=self.audit_records(version),
                )
            except registry.VersionRetired:
                receipt = self.receipt(target, version)  # archived and deleted before a lost status write
                if receipt is None:
                    return fold.stalled(
                        Reason.ARCHIVE_FAILED,
                        f"{self.model}:{version} is retired already but"
                        f" {self.spec.archive.location.uri} holds no archive receipt for it",
                        "Archiving",
                        self.status,
                    )
            except ObjectLockUnavailable as e:  # a bucket made without Object Lock: a person must act
                return fold.stalled(
                    Reason.ARCHIVE_FAILED,
                    f"spec.archive: {e}; create the archive bucket with Object Lock on (it cannot be turned"
                    " on later), or drop spec.archive.retention and legalHold",
                    "Archiving",
                    self.status,
                )
            except archive.BrokenReceipt:
                raise  # Stalled by `run`
            except Exception as e:
                if refused(e):  # the archive bucket refuses: retrying cannot help
                    why = f"{version}: {describe(e)}"
                    self.record(fold.step("Archive", "Running", before, self.now, why))
                    return fold.stalled(Reason.STORAGE_REFUSED, f"archiving {why}", "Archiving", self.status)
                if not isinstance(e, archive.ArchiveError) and not transient(e):
                    raise
                self.record(fold.step("Archive", "Running", before, self.now, f"{version}: {describe(e)}"))
                return fold.running(
                    "Archive",
                    f"archiving {version} failed ({describe(e)}); retrying, resuming where it stopped",
                    self.status,
                    reason=Reason.ARCHIVE_FAILED,
                    requeue=30.0,
                    retry=True,
                )
            objects += len(receipt.objects)
            size += sum(o.size for o in receipt.objects)
        self.status["archive_location"] = self.archived_at()
        message = f"{objects} objects ({size} bytes) copied and re-hashed with sha256"
        if lock is not None:
            message += f"; {lock.mode} Object Lock until {lock.retain_until.date().isoformat()}"
        if self.spec.archive.legal_hold:
            message += "; legal hold"
        self.record(fold.step("Archive", "Succeeded", before, self.now, message, objects, size))
        self.ctx.event(
            EventReason.ARCHIVED,
            f"{', '.join(self.versions_)}: {message} in {self.status['archive_location']}",
        )
        return fold.running("Delete", message, self.status)

    def archived_at(self) -> str:
        """URI of the archive: the version's folder, or the model's for several versions."""
        base = self.spec.archive.location.uri
        one = registry.version_prefix(self.model, self.versions_[0])
        return f"{base}/{one}" if len(self.versions_) == 1 else f"{base}/{one.rsplit('/', 1)[0]}"

    def receipt(self, target: ObjectStore, version: str) -> archive.ArchiveReceipt | None:
        key = f"{registry.version_prefix(self.model, version)}/{archive.RECEIPT}"
        if not target.exists(key):
            return None
        return archive.read_receipt(target, key)

    def lock(self) -> ObjectLock | None:
        retention = self.spec.archive.retention
        if retention is None:
            return None
        mode = "COMPLIANCE" if retention.mode == "Compliance" else "GOVERNANCE"
        fixed = self.before.retain_until
        return (
            ObjectLock(mode, fixed)
            if fixed is not None
            else ObjectLock.for_days(mode, retention.days, self.now)
        )

    def audit_records(self, version: str) -> dict[str, bytes]:
        """The version's audit records up to the archive's first attempt (a fixed cut: a retry archives
        the same bytes), as audit/records.jsonl beside it; none when the operator keeps no audit log."""
        log = self.ctx.auditor.log
        if log is None:
            return {}
        step = self.current("Archive")
        until = step.start_time if step is not None and step.start_time else self.now
        found = log.records(model=self.model, version=version, until=until)
        lines = b"".join(audit.canonical(r.document()) + b"\n" for r in found)
        return {"audit/records.jsonl": lines} if lines else {}

    # -- 3. delete ------------------------------------------------------------------------------

    def delete(self, source: ObjectStore, target: ObjectStore) -> Outcome:
        """The suspended deployments (drain Suspend, delete.modelDeployments), then each version behind
        a tombstone: llmops/archive.py refuses while an alias names it or its archive does not verify."""
        before = self.current("Delete")
        spec = self.spec
        done: list[str] = []
        if spec.drain is not None and spec.drain.mode == "Suspend" and spec.delete.model_deployments:
            for name in self.before.drained_deployments:
                if self.ctx.applier.delete(API_VERSION, MODEL_DEPLOYMENT.kind, name, self.ctx.namespace):
                    done.append(f"ModelDeployment {name}")
        objects = 0
        if spec.delete.artifacts:
            for version in self.versions_:
                if registry.read_tombstone(source, self.model, version) is not None and not any(
                    source.list(f"{registry.version_prefix(self.model, version)}/model/")
                ):
                    continue  # deleted before a lost status write
                receipt = self.receipt(target, version)
                if receipt is None:
                    return fold.stalled(
                        Reason.ARCHIVE_FAILED,
                        f"no archive receipt for {self.model}:{version} in {spec.archive.location.uri}:"
                        " nothing is deleted without a verified archive",
                        "Deleting",
                        self.status,
                    )
                keys = len(list(source.list(f"{registry.version_prefix(self.model, version)}/")))
                try:
                    archive.delete_version(
                        source,
                        self.model,
                        version,
                        target=target,
                        receipt=receipt,
                        actor=self.status.get("requested_by") or self.before.requested_by or self.actor,
                        reason=spec.reason,
                    )
                except registry.VersionInUse as e:
                    return fold.stalled(Reason.ALIAS_BLOCKS, str(e), "Deleting", self.status)
                except archive.ArchiveNotVerified as e:
                    return fold.stalled(Reason.ARCHIVE_FAILED, str(e)[:2000], "Deleting", self.status)
                objects += keys
            done.append(f"{objects} registry objects; tombstones left")
        message = "deleted " + ", ".join(done) if done else "nothing to delete"
        state = "Succeeded" if done else "Skipped"
        self.record(fold.step("Delete", state, before, self.now, message, objects))
        self.ctx.event(EventReason.DELETED, f"{', '.join(self.versions_)}: {message}")
        return fold.running("Dispose", message, self.status)

    # -- 4. dispose -----------------------------------------------------------------------------

    def disposal_kinds(self) -> dict[str, bool]:
        d = self.spec.disposal
        return {
            "payload": d.payload_samples,
            "feedback": d.feedback,
            "prompt": d.drift_samples,
            "training data": d.training_data,
        }

    def dispose(self, source: ObjectStore) -> Outcome:
        """Remove the retired versions' records from every place the deployments of the model keep
        them, and the work folders of the TrainingJobs that produced them."""
        before = self.current("Dispose")
        kinds = {k for k, on in self.disposal_kinds().items() if on and k != "training data"}
        retired = set(self.versions_)
        total = records.Removed()
        folders = 0
        for place in self.data_locations():
            store = self.store(place.location, f"ModelDeployment {place.deployment} data location")
            keys = [k for k in store.list("") if records.sample_kind(k) in kinds]
            total = total.add(records.remove(store, keys, lambda r: str(r.get("version")) in retired))
        if self.spec.disposal.training_data:
            for job in self.status.get("produced_by", self.before.produced_by):
                folders, freed = self.dispose_work_folders(source, job, retired)
                total = total.add(records.Removed(deleted=folders, bytes=freed))
        message = (
            f"{total.records} records removed ({total.rewritten} objects rewritten, {total.deleted} deleted,"
            f" {total.bytes} bytes)"
        )
        self.record(
            fold.step(
                "Dispose",
                "Succeeded",
                before,
                self.now,
                message,
                total.rewritten + total.deleted,
                total.bytes,
            )
        )
        self.ctx.event(EventReason.DISPOSED, f"{', '.join(self.versions_)}: {message}")
        return fold.running("Report", message, self.status)

    def data_locations(self) -> list[DataLocation]:
        """Where the deployments of the model keep records: those recorded at the drain, and every
        deployment of the model that exists now."""
        found = {(d.deployment, d.data): d for d in self.before.data_locations}
        for d in self.deployments():
            if d.view.spec.model.name == self.model:
                for place in locations_of(d.view.name, d.view.spec):
                    found[(place.deployment, place.data)] = place
        return list(found.values())

    def dispose_work_folders(self, source: ObjectStore, job: str, retired: set[str]) -> tuple[int, int]:
        """Delete jobs/<namespace>/<name>/<uid>/ (prepared data, checkpoints) of each run of `job`
        whose report says it registered a retired version; (objects, bytes)."""
        objects = size = 0
        prefix = f"jobs/{job}/"
        by_run: dict[str, list[str]] = {}
        for key in source.list(prefix):
            run = key[len(prefix) :].split("/", 1)[0]
            by_run.setdefault(run, []).append(key)
        for run, keys in sorted(by_run.items()):
            try:
                report = json.loads(source.get_bytes(f"{prefix}{run}/{REPORT}"))
            except Exception:
                continue  # no readable report: not known to be this version's; left alone
            produced = report.get("model_version") or report.get("modelVersion") or {}
            if produced.get("name") != self.model or str(produced.get("version")) not in retired:
                continue
            for key in keys:
                size += source.size(key)
                source.delete(key)
                objects += 1
        return objects, size

    # -- 5. report ------------------------------------------------------------------------------

    def report(self, source: ObjectStore) -> Outcome:
        """The post-mortem of each version (postmortem.py): its serving window from registration to the
        end of the drain, the figures Prometheus holds, the manifest (from the archive once the
        registry's copy is gone), the alias moves it took part in."""
        before = self.current("Report")
        spec = self.spec
        destination = names.report_location(
            spec.report.destination, spec.archive.location, self.model, self.versions_
        )
        field = "spec.report.destination" if spec.report.destination else "spec.archive.location"
        store = self.store(destination, field)
        deployments = sorted(
            {d.deployment for d in self.before.data_locations} | set(self.before.drained_deployments)
        )
        drained = self.current("Drain")
        end = (drained.completion_time if drained and drained.completion_time else None) or self.now
        created = conditions.parse_time(self.ctx.body["metadata"].get("creationTimestamp")) or end
        alerts = self.alerts(deployments)
        summaries, location = [], ""
        for version in self.versions_:
            manifest = self.manifest(source, version) or self.archived_manifest(version)
            start = conditions.parse_time(manifest.created_at) if manifest else None
            start = min(start or created, end)
            metrics = (
                postmortem.collect(
                    self.prometheus,
                    namespace=self.ctx.namespace,
                    deployments=deployments,
                    version=version,
                    start=start,
                    end=end,
                    alerts=alerts,
                )
                if deployments
                else postmortem.ServingMetrics.missing(
                    None, "no ModelDeployment of the namespace served the model"
                )
            )
            report = postmortem.PostMortem(
                model=self.model,
                version=version,
                namespace=self.ctx.namespace,
                deployments=deployments,
                start=start,
                end=end,
                reason=spec.reason,
                requested_by=self.before.requested_by or self.status.get("requested_by") or "unknown",
                manifest=manifest,
                events=self.serving_events(source, version),
                metrics=metrics,
            )
            prefix = "" if len(self.versions_) == 1 else version
            postmortem.write(store, prefix, report)
            location = f"{destination.uri}/{prefix + '/' if prefix else ''}{postmortem.MARKDOWN_NAME}"
            summaries.append(
                postmortem.summary(report)
                if len(self.versions_) == 1
                else f"{version}: {postmortem.summary(report)}"
            )
        self.status["report_location"] = location if len(self.versions_) == 1 else destination.uri
        self.status["summary"] = " | ".join(summaries)[:4096]
        message = f"post-mortem written to {self.status['report_location']}"
        self.record(fold.step("Report", "Succeeded", before, self.now, message, len(self.versions_)))
        self.ctx.event(
            EventReason.REPORTED, f"{', '.join(self.versions_)}: {message}: {self.status['summary']}"[:1024]
        )
        return fold.retired(self.steps, self.status)

    def alerts(self, deployments: list[str]) -> Any:
        """The first of the deployments' alert thresholds (the post-mortem's objectives)."""
        for d in self.deployments():
            if d.view.name in deployments and d.view.spec.monitoring.alerts is not None:
                return d.view.spec.monitoring.alerts
        return None

    def serving_events(self, source: ObjectStore, version: str) -> list[postmortem.ServingEvent]:
        """Alias moves to or from the version (the registry's alias history), and the rollouts,
        canaries, promotions and rollbacks of the deployments that served it (the audit trail)."""
        events = self.audited_events(version)
        try:
            moves = registry.alias_history(source, self.model)
        except registry.RegistryError:
            moves = []
        for move in moves:
            if version not in (move.version, move.previous):
                continue
            direction = "to" if move.version == version else "away from"
            when = conditions.parse_time(move.at) or self.now
            events.append(
                postmortem.ServingEvent(
                    time=when,
                    kind="alias",
                    detail=f"alias {move.alias} moved {direction} {version} by {move.by}: {move.reason}"[
                        :1024
                    ],
                )
            )
        return events

    def audited_events(self, version: str) -> list[postmortem.ServingEvent]:
        log = self.ctx.auditor.log
        if log is None:
            return []
        kinds = {
            "modeldeployment.rolled_out": "rollout",
            "modeldeployment.serving_stopped": "rollout",
            "modeldeployment.canary_progressed": "canary",
            "modeldeployment.promoted": "promotion",
            "modeldeployment.rolled_back": "rollback",
        }
        events = []
        for record in log.records(model=self.model, version=version, kind="ModelDeployment"):
            kind = kinds.get(record.data.action)
            when = conditions.parse_time(record.time)
            if kind is None or when is None:
                continue
            where = f"{record.data.object.namespace}/{record.data.object.name}"
            events.append(
                postmortem.ServingEvent(
                    time=when, kind=kind, deployment=where, detail=record.data.reason[:1024]
                )
            )
        return events

    def archived_manifest(self, version: str) -> registry.ModelVersion | None:
        """The manifest as archived (the registry keeps only a tombstone after the Delete step)."""
        key = f"{registry.version_prefix(self.model, version)}/{registry.MANIFEST}"
        try:
            return registry.ModelVersion.model_validate_json(self.archive_target.get_bytes(key))
        except Exception:
            return None


def locations_of(deployment: str, spec: ModelDeploymentSpec) -> list[DataLocation]:
    """The places a deployment's gateway writes records: payload samples and feedback, drift prompts."""
    found = []
    if spec.gateway.payload_sampling is not None:
        found.append(
            DataLocation(
                deployment=deployment, data="payload", location=spec.gateway.payload_sampling.destination
            )
        )
    if drift_on(spec):
        found.append(DataLocation(deployment=deployment, data="prompt", location=drift_destination(spec)))
    return found
