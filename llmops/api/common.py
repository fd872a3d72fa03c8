"""Types shared by every llmops resource: the base model, references, storage, resources, status.

Every string and list is bounded: the apiserver estimates the cost of CEL rules from those bounds
and refuses rules whose worst case is too expensive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

# metav1.Condition's patterns, and Kubernetes' own patterns for names and quantities.
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A non-negative Kubernetes quantity: resource requests cannot be negative.
QUANTITY = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

DnsLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]
DnsSubdomain = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Text = Annotated[str, StringConstraints(max_length=4096)]
Url = Annotated[str, StringConstraints(max_length=512, pattern=r"^https?://\S+$")]
# An object in S3 (s3://bucket/key) or a path on a volume the workload mounts.
DataUri = Annotated[str, StringConstraints(max_length=1024, pattern=r"^(s3://[^/\s]+(/\S*)?|/\S*)$")]
# Kubernetes quantities ("500m", "16Gi", 2) travel as int-or-string, like in a Pod spec.
Quantity = Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY)]
# A label key: an optional DNS-subdomain prefix and '/', then a name of up to 63 characters.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
Fraction = Annotated[float, Field(ge=0, le=1)]
# ISO 3166-1 alpha-2 region whose national phone formats count (libphonenumber's default region).
PhoneRegion = Annotated[str, StringConstraints(min_length=2, max_length=2, pattern=r"^[A-Z]{2}$")]
PHONE_REGIONS_DESCRIPTION = (
    "ISO 3166-1 alpha-2 regions whose national phone formats count as phone numbers (e.g. DE finds"
    " 030 1234567); numbers written with + and a country code are found whatever the regions."
)


def phone_regions_field() -> Any:
    """The `regions` field of every PII setting (training preparation and the gateway): one definition."""
    return Field(
        ["US"],
        min_length=1,
        max_length=32,
        description=PHONE_REGIONS_DESCRIPTION,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Rule:
    """A cross-field check, stated once: CEL for the apiserver, the same test in Python for everyone else."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None

    def openapi(self) -> dict[str, str]:
        """The rule as an `x-kubernetes-validations` entry."""
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


def _schema_extra(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.openapi() for rule in rules]


class ApiModel(BaseModel):
    """Base of every llmops API type: camelCase names on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", json_schema_extra=_schema_extra
    )
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in self.cel_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The object as the apiserver stores it: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def exactly_one(*values: object) -> bool:
    """True when exactly one of `values` is set (not None)."""
    return sum(value is not None for value in values) == 1


class ModelReference(ApiModel):
    """A model in the llmops registry, by name and either a version or an alias."""

    cel_rules = (
        Rule(
            "has(self.version) != has(self.alias)",
            "set exactly one of version or alias",
            lambda m: exactly_one(m.version, m.alias),
        ),
    )

    name: DnsLabel = Field(description="Registered model name.")
    version: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE)] | None = (
        Field(None, description='Immutable model version, e.g. "3". Quote numbers in YAML.')
    )
    alias: DnsLabel | None = Field(
        None, description="Movable alias that names a version, e.g. production; resolved at reconcile time."
    )


class SecretKeysRef(ApiModel):
    """S3 credentials in a Secret of the same namespace; they never appear in a spec."""

    name: DnsSubdomain = Field(description="Secret name.")
    access_key_id_key: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        "AWS_ACCESS_KEY_ID", description="Key in the Secret that holds the access key id."
    )
    secret_access_key_key: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        "AWS_SECRET_ACCESS_KEY", description="Key in the Secret that holds the secret access key."
    )


class SecretRef(ApiModel):
    """A Secret in the same namespace."""

    name: DnsSubdomain = Field(description="Secret name.")


class ConfigMapKeyRef(ApiModel):
    """One key of a ConfigMap in the same namespace."""

    name: DnsSubdomain = Field(description="ConfigMap name.")
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = (
        Field("ca.crt", description="Key in the ConfigMap.")
    )


class S3Connection(ApiModel):
    """How to reach an S3-compatible service."""

    endpoint: Url | None = Field(
        None, description="Endpoint URL, e.g. http://minio.storage:9000; omit for AWS S3."
    )
    region: Annotated[str, StringConstraints(max_length=63)] | None = Field(None, description="Region name.")
    credentials_secret_ref: SecretKeysRef | None = Field(
        None, description="Secret with the access keys; omit to use the pod's ambient identity (IRSA)."
    )
    ca_bundle: ConfigMapKeyRef | None = Field(
        None,
        description="ConfigMap key with the PEM certificates of the CAs that sign the endpoint's TLS "
        "certificate (a private or self-signed CA; the layout of cert-manager's ca.crt and trust-manager's "
        "bundles). The operator verifies the endpoint with it, and every pod that reads the location gets "
        "it mounted read-only at /etc/llmops/ca/<name>/<key>; omit for the system's CAs.",
    )


class SecretKeyRef(ApiModel):
    """One key of a Secret in the same namespace."""

    name: DnsSubdomain = Field(description="Secret name.")
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Key in the Secret."
    )


class S3Encryption(ApiModel):
    """Server-side encryption of every object the platform writes to the location (AWS S3 user
    guide, "Protecting data with server-side encryption")."""

    cel_rules = (
        Rule(
            "!has(self.kmsKeyId) || self.mode == 'SSE-KMS'",
            "kmsKeyId is for mode SSE-KMS only",
            lambda e: e.kms_key_id is None or e.mode == "SSE-KMS",
            field_path=".kmsKeyId",
        ),
        Rule(
            "has(self.customerKeySecretRef) == (self.mode == 'SSE-C')",
            "mode SSE-C needs customerKeySecretRef, and only SSE-C takes one",
            lambda e: (e.customer_key_secret_ref is not None) == (e.mode == "SSE-C"),
            field_path=".customerKeySecretRef",
        ),
    )

    mode: Literal["SSE-S3", "SSE-KMS", "SSE-C"] = Field(
        description="SSE-S3: keys the service manages (AES256); SSE-KMS: a KMS key; SSE-C: your own "
        "256-bit key, sent with every write and read (S3 accepts it over HTTPS only)."
    )
    kms_key_id: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = Field(
        None, description="SSE-KMS: the key's id or ARN (MinIO: the key's name); omit for the default key."
    )
    customer_key_secret_ref: SecretKeyRef | None = Field(
        None, description="SSE-C: the Secret key holding the 32-byte key, base64-encoded."
    )


class S3Location(S3Connection):
    """A bucket and key prefix on an S3-compatible service."""

    bucket: Annotated[
        str, StringConstraints(min_length=3, max_length=63, pattern=r"^[a-z0-9][-a-z0-9.]*[a-z0-9]$")
    ] = Field(description="Bucket name.")
    prefix: Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^/]\S*$")] | None = Field(
        None, description="Key prefix inside the bucket, without a leading slash."
    )
    encryption: S3Encryption | None = Field(
        None, description="Server-side encryption of the objects written here; omit for the bucket's default."
    )


class LocalLocation(ApiModel):
    """A directory on a volume mounted into the workload (development clusters, shared filesystems)."""

    path: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^/\S*$")] = Field(
        description="Absolute path of the directory."
    )


class ObjectStorageLocation(ApiModel):
    """Where objects live: an S3 bucket and prefix, or a local directory."""

    cel_rules = (
        Rule(
            "has(self.s3) != has(self.local)",
            "set exactly one of s3 or local",
            lambda m: exactly_one(m.s3, m.local),
        ),
    )

    s3: S3Location | None = Field(None, description="S3-compatible bucket and prefix.")
    local: LocalLocation | None = Field(None, description="Directory on a mounted volume.")

    def child(self, suffix: str) -> ObjectStorageLocation:
        """The location `suffix` (a relative path such as "jobs/ns/name") under this one: the same
        bucket, endpoint and credentials, the prefix (or directory) extended by `suffix`."""
        if self.local:
            return ObjectStorageLocation.model_validate(
                {"local": {"path": f"{self.local.path.rstrip('/')}/{suffix}"}}
            )
        assert self.s3 is not None
        prefix = f"{self.s3.prefix.rstrip('/')}/{suffix}" if self.s3.prefix else suffix
        return self.model_copy(update={"s3": self.s3.model_copy(update={"prefix": prefix})})

    @property
    def uri(self) -> str:
        """The directory's path, or s3://<bucket>/<prefix> (no trailing slash), for messages and logs."""
        if self.local:
            return self.local.path
        assert self.s3 is not None
        prefix = (self.s3.prefix or "").strip("/")
        return f"s3://{self.s3.bucket}/{prefix}".rstrip("/")


RetentionDays = Annotated[int, Field(ge=1, le=36500)]


def retention_days_field(what: str) -> Any:
    """The optional `retentionDays` of one store (docs/operations.md, Retention)."""
    return Field(
        None,
        description=(
            f"Days {what} are kept: the operator deletes older ones (by the time each object was written)"
            " about hourly, only the objects this store writes. Omit: the namespace default (ConfigMap"
            " llmops-retention), else kept until deleted by hand."
        ),
    )


class StoreRetention(ApiModel):
    """What the last retention sweep of one store found and did (docs/operations.md, Retention)."""

    store: Literal["payloadSamples", "feedback", "driftSamples", "workData", "checkpoints"] = Field(
        description="The kind of data."
    )
    location: Annotated[str, StringConstraints(max_length=2048)] = Field(
        description="Where it lives (s3://bucket/prefix or a path)."
    )
    retention_days: RetentionDays = Field(
        description="The retention applied, from the spec or the namespace."
    )
    source: Literal["spec", "namespace"] = Field(description="Where retentionDays came from.")
    kept_objects: int = Field(0, ge=0, description="Objects of this store kept after the last sweep.")
    kept_bytes: int = Field(0, ge=0, description="Their bytes.")
    deleted_objects: int = Field(0, ge=0, description="Objects deleted by every sweep so far.")
    deleted_bytes: int = Field(0, ge=0, description="Their bytes.")
    last_sweep_time: datetime | None = Field(None, description="When the last sweep ran.")
    complete: bool = Field(
        True,
        description="False when the last sweep stopped at its bound (objects listed or deleted per pass);"
        " the next one follows within a minute.",
    )
    message: ShortText | None = Field(None, description="Why the last sweep failed, if it did.")


class Toleration(ApiModel):
    """A Pod toleration, as in core/v1."""

    cel_rules = (
        Rule(
            "!has(self.value) || self.operator != 'Exists'",
            "value must be empty when operator is Exists",
            lambda t: t.value is None or t.operator != "Exists",
        ),
        Rule(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds needs effect NoExecute",
            lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
        ),
    )

    key: Annotated[str, StringConstraints(max_length=316)] | None = Field(
        None, description="Taint key to tolerate; empty with operator Exists tolerates every taint."
    )
    operator: Literal["Exists", "Equal"] = Field("Equal", description="How key and value are matched.")
    value: LabelValue | None = Field(None, description="Taint value, for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty tolerates every effect."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, description="For NoExecute: how long the pod stays bound after the taint appears."
    )


class Resources(ApiModel):
    """Compute for one pod: CPU, memory, GPUs and where it may be scheduled."""

    cel_rules = (
        Rule(
            "!has(self.nodeSelector) || self.nodeSelector.all(k, k.size() <= 316 && k.matches('"
            + LABEL_KEY.replace("\\", "\\\\")
            + "'))",
            "nodeSelector keys must be label keys: [prefix/]name, name up to 63 characters",
            lambda r: all(len(k) <= 316 and re.match(LABEL_KEY, k) for k in r.node_selector),
            field_path=".nodeSelector",
        ),
    )

    cpu: Quantity | None = Field(None, description='CPU request and limit, e.g. 4 or "500m".')
    memory: Quantity | None = Field(None, description='Memory request and limit, e.g. "16Gi".')
    gpus: int = Field(0, ge=0, le=64, description="Number of GPUs (nvidia.com/gpu).")
    gpu_type: LabelValue | None = Field(
        None, description="GPU product to schedule on, matched to the nvidia.com/gpu.product node label."
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Node labels the pod requires."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the pod tolerates."
    )


class CommonReason:
    """Condition reasons that mean the same for every kind, declared once; each kind's `Reason`
    (llmops/api/<kind>.py) extends this class with its own.

    The shared runtime (llmops/operators/runtime.py) sets the first four on any kind; the rest are failures
    that more than one kind can meet, named alike everywhere (docs/operations.md lists them).
    """

    INVALID_SPEC = "InvalidSpec"  # Stalled: the spec does not parse (a schema the CRD did not enforce)
    RECONCILE_FAILED = "ReconcileFailed"  # Stalled: the kind raised kopf.PermanentError
    RETRYING = "Retrying"  # Reconciling: an error that heals (the apiserver, a conflict); retried
    INTERNAL_ERROR = "InternalError"  # Stalled: a bug; the message says where to look
    CREDENTIALS_NOT_FOUND = "CredentialsNotFound"  # Stalled: a Secret or one of its keys is missing
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"  # Reconciling: the model registry does not answer
    # Stalled: object storage refused for a cause that does not heal by itself (credentials refused,
    # access denied, bucket missing, TLS verification failed); llmops.storage.StorageFailure names it
    STORAGE_REFUSED = "StorageRefused"


class Condition(ApiModel):
    """One aspect of the object's state, shaped like metav1.Condition."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316, pattern=CONDITION_TYPE)] = Field(
        description="Condition type in CamelCase, e.g. Ready."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the condition was computed from."
    )
    last_transition_time: datetime = Field(description="When status last changed.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=CONDITION_REASON)] = (
        Field(description="Machine-readable CamelCase reason for the last change.")
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        description="Human-readable details: what happened and what to do."
    )


class Status(ApiModel):
    """Fields every llmops status carries, read by kubectl wait, kstatus (Flux) and Argo CD."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready, Reconciling and Stalled, plus resource-specific conditions; one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    phase: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        None, description="Coarse lifecycle phase, for humans; automation should read conditions."
    )
    message: Text | None = Field(None, description="Summary of the current state.")
    last_handled_configuration: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None,
        description="The operator's record of the spec, labels and annotations it last handled (a"
        " SHA-256 digest): a change to them runs its reconcile again. Written by the operator only.",
    )
