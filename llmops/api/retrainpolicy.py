"""RetrainPolicy: keep a served model fresh. Triggers start a TrainingJob from a template; the new
version is compared with the version serving now (the champion) in the same run, and a winner goes
out as a canary of the target ModelDeployment by moving registry aliases, never by editing its spec.

The semantics of run control copy Kubernetes' CronJob (batch/v1): `concurrencyPolicy`,
`startingDeadlineSeconds`, `suspend`, history limits, and only the most recent missed schedule runs.
The promotion thresholds copy the shape of MLflow's `mlflow.models.MetricThreshold`.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from typing import Annotated, Literal

from croniter import croniter
from pydantic import Field, StringConstraints, field_validator

from llmops.api.common import (
    ApiModel,
    CommonReason,
    DnsLabel,
    ObjectStorageLocation,
    Rule,
    ShortText,
    Status,
)
from llmops.api.trainingjob import TrafficFeedback, TrainingJobSpec

# The annotation a person or a pipeline sets to start a run now; any new value starts one run.
MANUAL_TRIGGER_ANNOTATION = "retrain.llmops.io/requested"
# The annotation that approves the promotion of one version (Manual approval): its value is the version.
APPROVAL_ANNOTATION = "retrain.llmops.io/approve"

# Names of the child TrainingJobs are `<policy>-<minute since the epoch>` (10 digits at most).
MAX_NAME_LENGTH = 52

MetricKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_./:-]+$")]
CronExpression = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# Five fields (minute hour day-of-month month day-of-week) or a macro; croniter checks the rest.
CRON_SHAPE = r"^(@[a-z]+|(\S+\s+){4}\S+)$"
FeedbackName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
PromQL = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Duration = Annotated[int, Field(ge=60, le=31 * 24 * 3600)]


class ScheduleTrigger(ApiModel):
    """Retrain on a cron schedule, with CronJob's semantics.

    Missed runs (the operator was down, the policy suspended): only the most recent one starts, and
    only if it is at most `startingDeadlineSeconds` late. Daylight saving time (croniter, the cron
    library used): a time in the skipped hour runs at the first valid time after it (02:30 on a
    spring-forward day in Europe/Berlin runs at 03:00); a time in the repeated hour runs twice
    (02:30 CEST, then 02:30 CET), as Kubernetes CronJob does.
    """

    cel_rules = (
        Rule(
            "!self.cron.matches('(^|\\\\s)(CRON_)?TZ=')",
            "TZ= and CRON_TZ= are not supported in cron: set timeZone",
            lambda m: not re.search(r"(^|\s)(CRON_)?TZ=", m.cron),
            field_path=".cron",
        ),
        Rule(
            "self.cron.matches('" + CRON_SHAPE.replace("\\", "\\\\") + "')",
            "cron must have five fields (minute hour day-of-month month day-of-week) or be a macro such"
            " as @daily",
            lambda m: re.match(CRON_SHAPE, m.cron) is not None,
            field_path=".cron",
        ),
    )

    cron: CronExpression = Field(
        description='Cron expression in five fields ("0 3 * * *") or a macro (@daily, @hourly, @weekly).'
        " TZ= and CRON_TZ= are refused: use timeZone."
    )
    time_zone: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_+./-]*$")
    ] = Field("UTC", description="IANA time zone the cron expression is read in, e.g. Europe/Berlin.")
    starting_deadline_seconds: int | None = Field(
        None,
        ge=10,
        description="A scheduled run that could not start within this many seconds is skipped;"
        " omit for no deadline.",
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not re.match(CRON_SHAPE, value) or re.search(r"(^|\s)(CRON_)?TZ=", value):
            return value  # the rules of the model say what is wrong, with the field's path
        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin") from None
        return value


class DriftTrigger(ApiModel):
    """Retrain when the deployment's prompt drift score (llmops_drift_score, 0-1) stays above a
    threshold for a duration. Needs spec.drift on the ModelDeployment and Prometheus."""

    threshold: Annotated[float, Field(gt=0, le=1)] = Field(description="Drift score above which it counts.")
    for_seconds: Duration = Field(3600, description="How long the score must stay above the threshold.")


class QualityTrigger(ApiModel):
    """Retrain when a PromQL expression stays outside a range for a duration (Flagger's shape)."""

    cel_rules = (
        Rule(
            "has(self.min) || has(self.max)",
            "set min, max or both",
            lambda m: m.min is not None or m.max is not None,
        ),
        Rule(
            "!has(self.min) || !has(self.max) || self.min <= self.max",
            "min must not exceed max",
            lambda m: m.min is None or m.max is None or m.min <= m.max,
        ),
    )

    name: DnsLabel = Field(description="Name of this trigger in status and in run names.")
    query: PromQL = Field(description="PromQL expression; its first sample is read.")
    min: float | None = Field(None, description="Below this, the value is out of range.")
    max: float | None = Field(None, description="Above this, the value is out of range.")
    for_seconds: Duration = Field(3600, description="How long the value must stay out of range.")


class FeedbackTrigger(ApiModel):
    """Retrain when the share of negative user feedback over a window is too high
    (llmops_gateway_feedback_total, counted by the gateway's POST /v1/feedback)."""

    name: FeedbackName = Field("thumbs", description="Feedback name to count, e.g. thumbs.")
    max_negative_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        description="Negative feedback over all feedback above which it fires."
    )
    min_count: int = Field(20, ge=1, le=10_000_000, description="Fewer feedbacks in the window never fire.")
    window_seconds: Duration = Field(86400, description="The window the ratio is computed over.")


class NewDataTrigger(ApiModel):
    """Retrain when new objects appeared under a storage location since the last run consumed it."""

    location: ObjectStorageLocation = Field(description="Where new data lands (a bucket prefix or folder).")
    min_new_objects: int = Field(1, ge=1, le=1_000_000, description="New objects needed to fire.")


class Triggers(ApiModel):
    """What starts a run: any one of them. A run can also be asked for by hand with the annotation
    retrain.llmops.io/requested=<any new value>."""

    schedule: ScheduleTrigger | None = Field(None, description="A cron schedule.")
    drift: DriftTrigger | None = Field(None, description="The deployment's prompt drift score.")
    quality: list[QualityTrigger] = Field(
        default_factory=list,
        max_length=8,
        description="PromQL expressions that must stay in range.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    feedback: FeedbackTrigger | None = Field(None, description="The share of negative user feedback.")
    new_data: NewDataTrigger | None = Field(None, description="New objects under a storage location.")


class TemplateMetadata(ApiModel):
    """Labels and annotations given to every TrainingJob of the policy."""

    labels: dict[str, Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=dict, max_length=32, description="Labels."
    )
    annotations: dict[str, Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=dict, max_length=32, description="Annotations."
    )


class TrainingJobTemplate(ApiModel):
    """The TrainingJob each run creates. Its spec.output.modelName must be the model the target
    ModelDeployment serves; spec.evaluation.baseline is set by the policy to the champion."""

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata, description="Labels, annotations.")
    spec: TrainingJobSpec = Field(description="The TrainingJob spec, validated as a TrainingJob's.")


class MetricThreshold(ApiModel):
    """How the candidate must compare with the champion on one metric (MLflow's MetricThreshold:
    `threshold`, `min_absolute_change`, `min_relative_change`, `greater_is_better`).

    The candidate passes when every bound that is set holds:
    - threshold: candidate >= threshold (greaterIsBetter) or <= threshold;
    - minAbsoluteChange: candidate - champion >= change (greaterIsBetter) or champion - candidate >= change;
    - minRelativeChange: that difference over |champion| >= change.
    """

    cel_rules = (
        Rule(
            "has(self.threshold) || has(self.minAbsoluteChange) || has(self.minRelativeChange)",
            "set threshold, minAbsoluteChange or minRelativeChange",
            lambda m: any(v is not None for v in (m.threshold, m.min_absolute_change, m.min_relative_change)),
        ),
    )

    metric: MetricKey = Field(
        description="Metric key as the TrainingJob reports it: perplexity, <dataset>/<metric>, bias/gap..."
    )
    greater_is_better: bool = Field(description="Whether a higher value is better.")
    threshold: float | None = Field(None, description="Absolute bound the candidate must meet.")
    min_absolute_change: float | None = Field(
        None, ge=0, description="Least improvement over the champion, in the metric's unit."
    )
    min_relative_change: float | None = Field(
        None, ge=0, description="Least improvement over the champion, as a fraction of its value."
    )


class Promotion(ApiModel):
    """How a new version goes out: through registry aliases that the ModelDeployment follows
    (spec.model.alias = championAlias, spec.rollout.canary.model.alias = challengerAlias), so the
    ModelDeployment's spec, kept in Git, never changes."""

    cel_rules = (
        Rule(
            "self.championAlias != self.challengerAlias",
            "championAlias and challengerAlias must differ",
            lambda m: m.champion_alias != m.challenger_alias,
        ),
    )

    champion_alias: DnsLabel = Field("champion", description="The alias the ModelDeployment serves.")
    challenger_alias: DnsLabel = Field("challenger", description="The alias it canaries.")
    metrics: list[MetricThreshold] = Field(
        default_factory=list,
        max_length=16,
        description="How the candidate must beat the champion, measured in the same run on the same data;"
        " empty: passing its own gates is enough.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["metric"]},
    )
    approval: Literal["Automatic", "Manual"] = Field(
        "Automatic",
        description="Manual: a winner waits for the annotation retrain.llmops.io/approve=<version> before"
        " its canary starts.",
    )
    enabled: bool = Field(True, description="False: runs are compared and recorded, never promoted.")


class ServedTraffic(ApiModel):
    """Add what the gateway sampled (spec.gateway.payloadSampling of the ModelDeployment) to each run's
    data, as chat exchanges (a TrainingJob `servedTraffic` source), PII-scrubbed by the run's
    preparation."""

    feedback: TrafficFeedback | None = Field(None, description="Only exchanges rated this well; omit: all.")
    since_seconds: int | None = Field(
        None, ge=1, description="Only exchanges at most this old when the run reads them."
    )


class RetrainPolicySpec(ApiModel):
    """Desired state of a RetrainPolicy."""

    cel_rules = (
        Rule(
            "!has(self.servedTraffic) || (has(self.trainingJobTemplate.spec.data.preparation)"
            " && has(self.trainingJobTemplate.spec.data.preparation.pii)"
            " && (!has(self.trainingJobTemplate.spec.data.preparation.pii.enabled)"
            " || self.trainingJobTemplate.spec.data.preparation.pii.enabled))",
            "servedTraffic needs trainingJobTemplate.spec.data.preparation.pii (enabled): served traffic is"
            " what users typed",
            lambda m: (
                m.served_traffic is None
                or (
                    m.training_job_template.spec.data.preparation.pii is not None
                    and m.training_job_template.spec.data.preparation.pii.enabled
                )
            ),
        ),
    )

    model_deployment: DnsLabel = Field(
        description="The ModelDeployment (same namespace) whose model this policy keeps fresh."
    )
    training_job_template: TrainingJobTemplate = Field(description="The TrainingJob each run creates.")
    triggers: Triggers = Field(default_factory=Triggers, description="What starts a run.")
    served_traffic: ServedTraffic | None = Field(
        None, description="Also train on the traffic the gateway sampled (the data flywheel)."
    )
    promotion: Promotion = Field(default_factory=Promotion, description="How a new version goes out.")
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = Field(
        "Forbid",
        description="A trigger while a run is active: Allow starts another, Forbid skips it, Replace"
        " deletes the active run and starts the new one (CronJob's semantics).",
    )
    cooldown_seconds: int = Field(
        3600,
        ge=60,
        le=90 * 24 * 3600,
        description="Least time from the start of the last run (whatever started it) before drift,"
        " quality, feedback or newData may start another; schedule and manual runs ignore it.",
    )
    suspend: bool = Field(False, description="No new runs; active runs and promotions go on.")
    successful_runs_history_limit: int = Field(
        3, ge=0, le=100, description="Succeeded TrainingJobs kept (their versions stay registered)."
    )
    failed_runs_history_limit: int = Field(1, ge=0, le=100, description="Failed TrainingJobs kept.")


# -- status ------------------------------------------------------------------------------------


class TriggerStatus(ApiModel):
    """One trigger's last evaluation."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=80)] = Field(
        description="schedule, drift, feedback, newData, manual or quality/<name>."
    )
    firing: bool = Field(False, description="Whether it asks for a run now.")
    value: float | None = Field(None, description="The value it read (score, ratio, objects, ...).")
    message: ShortText | None = Field(None, description="What it found.")
    last_evaluation_time: datetime | None = Field(None, description="When it was last evaluated.")
    last_fired_time: datetime | None = Field(None, description="When it last started a run.")
    next_time: datetime | None = Field(None, description="schedule: when it fires next.")
    pending_since: datetime | None = Field(
        None, description="drift, quality: since when the condition holds (it fires after forSeconds)."
    )


class Comparison(ApiModel):
    """One metric of the candidate against the champion."""

    metric: MetricKey = Field(description="Metric key.")
    candidate: float | None = Field(None, description="The new version's value.")
    champion: float | None = Field(None, description="The serving version's value, in the same run.")
    change: float | None = Field(None, description="Improvement: candidate - champion, sign-corrected.")
    passed: bool = Field(description="Whether every bound of the threshold holds.")
    message: ShortText | None = Field(None, description="The bound that failed, and by how much.")


class RunRecord(ApiModel):
    """One run of the policy."""

    training_job: DnsLabel = Field(description="The TrainingJob of the run.")
    trigger: Annotated[str, StringConstraints(max_length=80)] = Field(description="What started it.")
    trigger_value: ShortText | None = Field(None, description="The value that fired it.")
    start_time: datetime | None = Field(None, description="When the TrainingJob was created.")
    completion_time: datetime | None = Field(None, description="When it succeeded or failed.")
    phase: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        None, description="The TrainingJob's phase."
    )
    version: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None, description="The model version it registered."
    )
    champion_version: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None, description="The version it was compared with."
    )
    comparison: list[Comparison] = Field(default_factory=list, max_length=16, description="Metric table.")
    verdict: (
        Literal["Training", "Failed", "Lost", "AwaitingApproval", "Canary", "Promoted", "RolledBack", "Won"]
        | None
    ) = Field(None, description="Where the run's version stands.")
    message: ShortText | None = Field(None, description="Why.")


class RetrainPolicyStatus(Status):
    """Observed state of a RetrainPolicy."""

    last_schedule_time: datetime | None = Field(
        None, description="The last scheduled time a run started for."
    )
    last_trigger: ShortText | None = Field(None, description="The last trigger that started a run, and why.")
    active: list[DnsLabel] = Field(
        default_factory=list,
        max_length=16,
        description="TrainingJobs running now.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    triggers: list[TriggerStatus] = Field(
        default_factory=list,
        max_length=16,
        description="Each trigger's last evaluation.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    runs: list[RunRecord] = Field(
        default_factory=list, max_length=32, description="The runs kept (history limits), newest first."
    )
    champion_version: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None, description="The version the champion alias names."
    )
    last_promoted_version: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None, description="The last version this policy promoted."
    )
    data_marker: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        None, description="newData: the newest object key the last run consumed."
    )
    manual_request: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="The last value of retrain.llmops.io/requested that started a run."
    )


class Reason(CommonReason):
    """The reasons of a RetrainPolicy's conditions (`status.conditions[].reason`), declared once."""

    WATCHING = "Watching"  # Ready: no run; the triggers are evaluated
    SUSPENDED = "Suspended"  # Ready: spec.suspend
    TRAINING = "Training"  # Reconciling: a run is active
    PROMOTING = "Promoting"  # Reconciling: a version is in its canary
    AWAITING_APPROVAL = "AwaitingApproval"  # Ready: a winner waits for the approve annotation
    DEPLOYMENT_NOT_FOUND = "DeploymentNotFound"  # Stalled: spec.modelDeployment does not exist
    WRONG_MODEL = "WrongModel"  # Stalled: the template registers another model than the deployment serves
    NOT_ON_ALIASES = "NotOnAliases"  # Stalled: the deployment does not follow the promotion's aliases
    NO_TRAFFIC = "NoTraffic"  # Stalled: spec.servedTraffic, but the deployment samples no payloads


class EventReason:
    """Reasons of the Events a RetrainPolicy posts."""

    TRIGGERED = "Triggered"
    MISSED_SCHEDULES = "TooManyMissedTimes"
    COMPARED = "Compared"
    ALIAS_MOVED = "AliasMoved"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    NOT_PROMOTED = "NotPromoted"
