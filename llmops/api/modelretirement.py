"""ModelRetirement: the end of a model version's life, in ordered, restartable steps.

Drain -> Archive -> Delete -> Dispose -> Report, each recorded in `status.steps` with its result.
Nothing is deleted before the archive has been read back and re-hashed with sha256 against the
registry's manifest (an S3 ETag is not a content hash for multipart uploads); a tombstone stays in
the registry so lineage never dangles. Object Lock follows the S3 API (GOVERNANCE / COMPLIANCE
retention, legal hold; AWS S3 user guide, "Using S3 Object Lock").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from llmops.api.common import (
    ApiModel,
    CommonReason,
    DnsLabel,
    ModelReference,
    ObjectStorageLocation,
    Rule,
    ShortText,
    Status,
    Text,
)

# The annotation a second person sets to approve a retirement that asks for approval; any value.
APPROVAL_ANNOTATION = "retire.llmops.io/approve"

VersionString = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9._-]+$")]
STEPS = ("Drain", "Archive", "Delete", "Dispose", "Report")


class RetiredModel(ApiModel):
    """The version to retire, or every version of a model."""

    name: DnsLabel = Field(description="Registered model name.")
    version: VersionString | None = Field(
        None, description="The version to retire; omit to retire every version of the model."
    )


class Drain(ApiModel):
    """How traffic leaves the version before anything else happens.

    Replace: every ModelDeployment serving the version is pointed at `replacement` (an alias that names
    the version is moved; a spec that names the version is patched), and the drain waits until none
    serves it and the gateways report no request in flight for it. Suspend: every ModelDeployment
    serving it gets `spec.suspend` (scaled to zero; its gateway answers 503 `model_suspended`).
    Either way the drain ends at the latest `gracePeriodSeconds` after it began.
    """

    cel_rules = (
        Rule(
            "self.mode != 'Replace' || has(self.replacement)",
            "drain.replacement is required when mode is Replace",
            lambda m: m.mode != "Replace" or m.replacement is not None,
            field_path=".replacement",
        ),
        Rule(
            "self.mode != 'Suspend' || !has(self.replacement)",
            "drain.replacement is only for mode Replace",
            lambda m: m.mode != "Suspend" or m.replacement is None,
            field_path=".replacement",
        ),
    )

    mode: Literal["Replace", "Suspend"] = Field(description="Replace the version, or suspend what serves it.")
    replacement: ModelReference | None = Field(
        None, description="Replace: the version (or alias) that takes the traffic over."
    )
    grace_period_seconds: int = Field(
        300, ge=0, le=86400, description="Longest wait for in-flight requests to finish, in seconds."
    )


class ObjectLock(ApiModel):
    """S3 Object Lock retention of every archived object (the bucket must have Object Lock on)."""

    mode: Literal["Governance", "Compliance"] = Field(
        description="Governance: users with s3:BypassGovernanceRetention may shorten it; Compliance: no one."
    )
    days: int = Field(ge=1, le=36500, description="Retention from the archive's time, in days.")


class Archive(ApiModel):
    """Where the version is archived and verified before anything is deleted."""

    cel_rules = (
        Rule(
            "(!has(self.retention) && !self.legalHold) || has(self.location.s3)",
            "archive.retention and archive.legalHold need an S3 location (Object Lock is an S3 feature)",
            lambda m: (m.retention is None and not m.legal_hold) or m.location.s3 is not None,
            field_path=".location",
        ),
    )

    location: ObjectStorageLocation = Field(
        description="The archive; a version's objects keep their registry keys"
        " (models/<model>/versions/<version>/)."
    )
    retention: ObjectLock | None = Field(None, description="Object Lock retention; omit for none.")
    legal_hold: bool = Field(False, description="Put an Object Lock legal hold (no expiry) on every object.")


class Deletion(ApiModel):
    """What goes once the archive is verified."""

    artifacts: bool = Field(
        True, description="Delete the version's registry artifacts; a tombstone stays in their place."
    )
    model_deployments: bool = Field(
        True, description="drain.mode Suspend: delete the suspended ModelDeployments."
    )


class Disposal(ApiModel):
    """Data the version's life produced, deleted after the artifacts (counts and bytes in status)."""

    payload_samples: bool = Field(True, description="Its records in the deployments' payload samples.")
    feedback: bool = Field(True, description="Its records in the deployments' feedback.")
    drift_samples: bool = Field(True, description="Its records in the deployments' drift prompt samples.")
    training_data: bool = Field(
        True, description="The work folder of the TrainingJob that produced it (prepared data, checkpoints)."
    )


class Report(ApiModel):
    """The post-mortem: Markdown, JSON and charts."""

    destination: ObjectStorageLocation | None = Field(
        None,
        description="Where it is written; omit for models/<model>/versions/<version>/postmortem/ in the"
        " archive.",
    )


class ModelRetirementSpec(ApiModel):
    """Desired end of life of a model version.

    `model`, `registry`, `reason` and `archive` are immutable (a retirement is a one-way path); the rest
    may change while it runs: add a drain plan to a retirement stalled on StillServed, or turn dryRun
    off once the plan reads right. Steps already done stay done (the archive is kept; a tombstone stays).
    """

    model: RetiredModel = Field(description="What to retire.")
    registry: ObjectStorageLocation = Field(description="The registry that holds the version.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="Why it is retired (in the tombstone, the audit trail and the post-mortem)."
    )
    drain: Drain | None = Field(
        None,
        description="How traffic leaves the version; required when a ModelDeployment serves it.",
    )
    archive: Archive = Field(description="The verified archive taken before anything is deleted.")
    delete: Deletion = Field(default_factory=Deletion, description="What is deleted after the archive.")
    disposal: Disposal = Field(default_factory=Disposal, description="Derived data deleted at the end.")
    report: Report = Field(default_factory=Report, description="The post-mortem report.")
    dry_run: bool = Field(False, description="Only list what each step would do and delete; change nothing.")
    require_approval: bool = Field(
        False,
        description=f"Wait for a second person's {APPROVAL_ANNOTATION} annotation before the first step"
        " (needs the operator's admission webhook, which records who applied and who approved).",
    )


# -- status ------------------------------------------------------------------------------------


class StepStatus(ApiModel):
    """One step's result."""

    name: Literal["Drain", "Archive", "Delete", "Dispose", "Report"] = Field(description="The step.")
    state: Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"] = Field(
        "Pending", description="Where it stands."
    )
    start_time: datetime | None = Field(None, description="When it began.")
    completion_time: datetime | None = Field(None, description="When it ended.")
    objects: int | None = Field(None, ge=0, description="Objects it copied, verified or deleted.")
    bytes: int | None = Field(None, ge=0, description="Bytes it copied, verified or deleted.")
    message: ShortText | None = Field(None, description="What it did or found.")


class PlannedAction(ApiModel):
    """What a step would do (dry run), or did."""

    step: Literal["Drain", "Archive", "Delete", "Dispose", "Report"] = Field(description="The step.")
    action: Text = Field(description="The action, with the objects it touches.")


class DataLocation(ApiModel):
    """Where a deployment that served the model keeps records (recorded at the drain, so that disposal
    still finds them after a suspended deployment was deleted)."""

    deployment: DnsLabel = Field(description="The ModelDeployment.")
    data: Literal["payload", "prompt"] = Field(
        description="payload: payload samples and feedback; prompt: the drift monitor's prompt samples."
    )
    location: ObjectStorageLocation = Field(description="The location (its Secret by name only).")


class ModelRetirementStatus(Status):
    """Observed state of a ModelRetirement."""

    versions: list[VersionString] = Field(
        default_factory=list, max_length=256, description="The versions this retirement covers."
    )
    steps: list[StepStatus] = Field(
        default_factory=list,
        max_length=5,
        description="Each step's result, in order.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    plan: list[PlannedAction] = Field(
        default_factory=list, max_length=64, description="dryRun: what each step would do."
    )
    requested_by: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="Who applied the retirement (from admission)."
    )
    approved_by: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="Who approved it (from admission)."
    )
    drain_start_time: datetime | None = Field(None, description="When the drain began.")
    drained_deployments: list[DnsLabel] = Field(
        default_factory=list, max_length=64, description="ModelDeployments the drain acted on."
    )
    data_locations: list[DataLocation] = Field(
        default_factory=list, max_length=64, description="Records of the deployments that served the model."
    )
    produced_by: list[Annotated[str, StringConstraints(max_length=320)]] = Field(
        default_factory=list,
        max_length=256,
        description="namespace/name of the TrainingJob that produced each version (its lineage).",
    )
    archive_location: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        None, description="URI of the verified archive."
    )
    retain_until: datetime | None = Field(None, description="Object Lock retention of the archive.")
    report_location: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        None, description="URI of the post-mortem's Markdown."
    )
    summary: Text | None = Field(None, description="The post-mortem in one paragraph.")


class Reason(CommonReason):
    """The reasons of a ModelRetirement's conditions (`status.conditions[].reason`), declared once."""

    AWAITING_APPROVAL = "AwaitingApproval"  # Reconciling: require_approval, no approval yet
    SELF_APPROVAL = "SelfApproval"  # Stalled: the approver is the requester
    DRY_RUN = "DryRun"  # Ready: the plan is in status.plan; nothing changed
    STILL_SERVED = "StillServed"  # Stalled: a ModelDeployment serves the version and spec.drain is unset
    CANARY = "ServedAsCanary"  # Stalled: the version is a canary; end the canary first
    VERSION_NOT_FOUND = "VersionNotFound"  # Stalled: the registry has no such version
    DRAINING = "Draining"  # Reconciling
    ARCHIVING = "Archiving"  # Reconciling
    ARCHIVE_FAILED = "ArchiveFailed"  # Reconciling: the copy or its verification failed; retried
    DELETING = "Deleting"  # Reconciling
    ALIAS_BLOCKS = "AliasPointsAtVersion"  # Stalled: an alias still names the version
    DISPOSING = "Disposing"  # Reconciling
    REPORTING = "Reporting"  # Reconciling
    RETIRED = "Retired"  # Ready: every step done


class EventReason:
    """Reasons of the Events a ModelRetirement posts (each mirrored in the audit trail)."""

    DRAIN_STARTED = "DrainStarted"
    DRAINED = "Drained"
    ARCHIVED = "Archived"
    DELETED = "Deleted"
    DISPOSED = "Disposed"
    REPORTED = "Reported"
