"""The contract between the TrainingJob operator and the training workload inside Ray.

The operator serialises a `TrainingRun` into the Ray job's entrypoint (`python -m llmops.training.run
--config <base64 json>`); the workload reports through a `RunReport` object it writes to its work
folder in object storage, which the operator reads back into the TrainingJob's status.

Why a report object in storage and not Ray job metadata or a status writer in the pod: it works
the same for both runtimes (KubeRay and an existing cluster through the Jobs API), needs no
Kubernetes credentials inside the training pods (least privilege), survives the Ray cluster's
deletion, and the work folder already holds the checkpoints and evaluation report it points at.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Literal

from pydantic import Field

from llmops.api.common import ApiModel, ObjectStorageLocation
from llmops.api.trainingjob import (
    BaselineResult,
    GateResult,
    Lineage,
    ModelVersionRef,
    Progress,
    TrainingJobSpec,
)

REPORT = "report.json"
# The Ray pods read each location's credentials from <prefix>AWS_ACCESS_KEY_ID/<prefix>AWS_SECRET_ACCESS_KEY
# (llmops.storage.credentials_from_env): the registry's (and the work folder's) without a prefix,
# spec.data.s3's under DATA_ when its Secret is not the registry's; the Secret of
# spec.data.sources[i].servedTraffic.location.s3 under TRAFFIC<i>_ when it is neither of those.
DATA_CREDENTIALS_PREFIX = "DATA_"
TRAFFIC_CREDENTIALS_PREFIX = "TRAFFIC{index}_"


def data_credentials_prefix(spec: TrainingJobSpec) -> str | None:
    """The env prefix of spec.data.s3's credentials in the Ray pods: "" when they are the registry's,
    DATA_CREDENTIALS_PREFIX when another Secret (or other keys) holds them, None without a Secret."""
    data = spec.data.s3.credentials_secret_ref if spec.data.s3 else None
    if data is None:
        return None
    registry = spec.output.registry.s3.credentials_secret_ref if spec.output.registry.s3 else None
    return "" if data == registry else DATA_CREDENTIALS_PREFIX


def traffic_credentials_prefix(spec: TrainingJobSpec, index: int) -> str | None:
    """The env prefix of the credentials of spec.data.sources[index].servedTraffic.location.s3 in the
    Ray pods: "" when its Secret is the registry's, spec.data.s3's prefix when it is that Secret,
    TRAFFIC<index>_ for any other, None without a Secret (the pods' own identity)."""
    traffic = spec.data.sources[index].served_traffic
    s3 = traffic.location.s3 if traffic else None
    ref = s3.credentials_secret_ref if s3 else None
    if ref is None:
        return None
    registry = spec.output.registry.s3.credentials_secret_ref if spec.output.registry.s3 else None
    if ref == registry:
        return ""
    if spec.data.s3 is not None and ref == spec.data.s3.credentials_secret_ref:
        return data_credentials_prefix(spec)
    return TRAFFIC_CREDENTIALS_PREFIX.format(index=index)


class JobIdentity(ApiModel):
    """Which TrainingJob a run belongs to (for lineage and for the work folder's name)."""

    namespace: str
    name: str
    uid: str
    generation: int = 1


class TrainingRun(ApiModel):
    """Everything the workload needs: the spec as the user wrote it, and where to work."""

    job: JobIdentity
    spec: TrainingJobSpec
    work_dir: ObjectStorageLocation = Field(
        description="Checkpoints, prepared data, the evaluation report and the run report live here."
    )
    code_version: str = Field("unknown", description="llmops version that built the run.")

    def encode(self) -> str:
        return base64.urlsafe_b64encode(
            self.model_dump_json(by_alias=True, exclude_none=True).encode()
        ).decode()

    @classmethod
    def decode(cls, text: str) -> TrainingRun:
        return cls.model_validate_json(base64.urlsafe_b64decode(text.encode()))


def work_dir_for(registry: ObjectStorageLocation, job: JobIdentity) -> ObjectStorageLocation:
    """jobs/<namespace>/<name>/<uid>/ under the registry: one folder per TrainingJob object."""
    return registry.child(f"jobs/{job.namespace}/{job.name}/{job.uid}")


class RunReport(ApiModel):
    """What the workload tells the operator; rewritten as the run goes, final when `phase` is terminal."""

    phase: Literal["Running", "Succeeded", "Failed"] = "Running"
    message: str = ""
    progress: Progress = Field(default_factory=Progress)
    metrics: dict[str, float] = Field(default_factory=dict)
    gates: list[GateResult] = Field(default_factory=list)
    baseline: BaselineResult | None = Field(
        None, description="spec.evaluation.baseline's metrics, measured in the same run; set once evaluated."
    )
    model_version: ModelVersionRef | None = None
    lineage: Lineage | None = None
    failed_gates: list[str] = Field(default_factory=list)
    updated_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
