"""The llmops API: one pydantic model pair (spec, status) per custom resource, and their registry.

`llmops.crdgen` turns the registry into CustomResourceDefinitions; operators parse objects with the
same models, so the CRD and the code that reads it cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmops.api.common import ApiModel, Status
from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from llmops.api.modelretirement import ModelRetirementSpec, ModelRetirementStatus
from llmops.api.retrainpolicy import MAX_NAME_LENGTH as RETRAIN_POLICY_NAME_LENGTH
from llmops.api.retrainpolicy import RetrainPolicySpec, RetrainPolicyStatus
from llmops.api.trainingjob import TrainingJobSpec, TrainingJobStatus

GROUP = "llmops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "llmops"


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get`."""

    name: str
    type: str  # integer, number, string, boolean or date
    json_path: str
    description: str
    priority: int = 0  # 0: always shown; 1: only with -o wide


READY = PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Ready condition")
PHASE = PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase")
AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation")


@dataclass(frozen=True)
class Resource:
    """One custom resource kind: its names, models and kubectl columns."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[ApiModel]
    status: type[Status]
    printer_columns: tuple[PrinterColumn, ...]
    # Required spec fields that may not change after creation (a CEL transition rule). Declared here,
    # not on the spec model, because other resources embed the spec as a template that stays editable.
    immutable_fields: tuple[str, ...] = ()
    # Every child carries the name as a label value (at most 63); a kind whose children's names add
    # a suffix to it allows less.
    max_name_length: int = 63
    name_length_reason: str = "it is a label value on every object made for it"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


TRAINING_JOB = Resource(
    kind="TrainingJob",
    plural="trainingjobs",
    singular="trainingjob",
    short_names=("tj",),
    spec=TrainingJobSpec,
    status=TrainingJobStatus,
    printer_columns=(
        PHASE,
        READY,
        PrinterColumn("Method", "string", ".spec.method.type", "Training method"),
        PrinterColumn("Model", "string", ".spec.output.modelName", "Registered model name"),
        PrinterColumn("Version", "string", ".status.modelVersion.version", "Model version produced"),
        PrinterColumn("Stage", "string", ".status.progress.stage", "Current stage"),
        PrinterColumn("Progress", "integer", ".status.progress.percent", "Training progress in percent"),
        PrinterColumn("Loss", "number", ".status.progress.loss", "Latest training loss", priority=1),
        AGE,
    ),
    immutable_fields=("model", "data"),
)

MODEL_DEPLOYMENT = Resource(
    kind="ModelDeployment",
    plural="modeldeployments",
    singular="modeldeployment",
    short_names=("md",),
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    printer_columns=(
        PHASE,
        READY,
        PrinterColumn("Model", "string", ".spec.model.name", "Model name"),
        PrinterColumn("Version", "string", '.status.versions[?(@.role=="stable")].version', "Stable version"),
        PrinterColumn("Canary", "integer", '.status.versions[?(@.role=="canary")].weight', "Canary weight"),
        PrinterColumn("Replicas", "integer", ".status.readyReplicas", "Ready replicas"),
        PrinterColumn("Endpoint", "string", ".status.endpoint", "OpenAI-compatible base URL", priority=1),
        AGE,
    ),
)

RETRAIN_POLICY = Resource(
    kind="RetrainPolicy",
    plural="retrainpolicies",
    singular="retrainpolicy",
    short_names=("rp",),
    spec=RetrainPolicySpec,
    status=RetrainPolicyStatus,
    printer_columns=(
        PHASE,
        READY,
        PrinterColumn("Deployment", "string", ".spec.modelDeployment", "Target ModelDeployment"),
        PrinterColumn(
            "Model", "string", ".spec.trainingJobTemplate.spec.output.modelName", "Registered model name"
        ),
        PrinterColumn("Last Trigger", "string", ".status.lastTrigger", "Last trigger that started a run"),
        PrinterColumn("Active", "string", ".status.active[0]", "TrainingJob running now"),
        PrinterColumn("Promoted", "string", ".status.lastPromotedVersion", "Last version promoted"),
        PrinterColumn("Champion", "string", ".status.championVersion", "Version serving", priority=1),
        AGE,
    ),
    max_name_length=RETRAIN_POLICY_NAME_LENGTH,
    name_length_reason="its TrainingJobs are named <name>-<minute>, and that is a label value",
)

MODEL_RETIREMENT = Resource(
    kind="ModelRetirement",
    plural="modelretirements",
    singular="modelretirement",
    short_names=("mr",),
    spec=ModelRetirementSpec,
    status=ModelRetirementStatus,
    printer_columns=(
        PHASE,
        READY,
        PrinterColumn("Model", "string", ".spec.model.name", "Registered model name"),
        PrinterColumn("Version", "string", ".spec.model.version", "Version retired (empty: all)"),
        PrinterColumn("Archive", "string", ".status.archiveLocation", "Verified archive", priority=1),
        PrinterColumn("Retain Until", "date", ".status.retainUntil", "Object Lock retention", priority=1),
        PrinterColumn("Summary", "string", ".status.summary", "Post-mortem summary", priority=1),
        AGE,
    ),
    immutable_fields=("model", "registry", "reason", "archive"),
)

RESOURCES: tuple[Resource, ...] = (TRAINING_JOB, MODEL_DEPLOYMENT, RETRAIN_POLICY, MODEL_RETIREMENT)
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}
