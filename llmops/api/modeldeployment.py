"""ModelDeployment: serve a registered model with vLLM behind the llmops gateway.

One module for the whole API of the kind (over 400 lines): its spec and status types, their CEL
rules and condition reasons are the CRD's single source (`make crds`), read together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from llmops.api.common import (
    ApiModel,
    CommonReason,
    DnsLabel,
    DnsSubdomain,
    Fraction,
    ModelReference,
    ObjectStorageLocation,
    PhoneRegion,
    Resources,
    RetentionDays,
    Rule,
    SecretRef,
    ShortText,
    Status,
    StoreRetention,
    Url,
    phone_regions_field,
    retention_days_field,
)

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed", "ScaledToZero", "Suspended"]


class Reason(CommonReason):
    """The reasons of a ModelDeployment's conditions (`status.conditions[].reason`), one per cause.

    Ready=True: SERVING, SCALED_TO_ZERO, CANARY_ANALYSING, ANALYSIS_INCONCLUSIVE, PROMOTED, SUSPENDED
    (spec.suspend, every version at zero replicas; also the `Suspended` condition's reason).
    Reconciling=True: PROGRESSING, REGISTRY_UNAVAILABLE, SUSPENDED (spec.suspend: the gateway draining,
    or pods still stopping).
    Stalled=True (phase Degraded): ROLLED_BACK, ANALYSIS_FAILED; (phase Failed): the rest, each a
    problem the spec, the registry or the cluster must fix.
    """

    SERVING = "Serving"
    SCALED_TO_ZERO = "ScaledToZero"
    CANARY_ANALYSING = "CanaryAnalysing"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    PROMOTED = "Promoted"
    SUSPENDED = "Suspended"
    NOT_SUSPENDED = "NotSuspended"  # the `Suspended` condition's reason while spec.suspend is false
    PROGRESSING = "Progressing"
    ROLLED_BACK = "RolledBack"
    ANALYSIS_FAILED = "AnalysisFailed"
    GATES_NOT_PASSED = "GatesNotPassed"
    WRONG_CONTENT = "WrongContent"
    VERSION_NOT_FOUND = "VersionNotFound"
    MISSING_CRD = "MissingCRD"
    APPLY_FAILED = "ApplyFailed"


Percent = Annotated[int, Field(ge=0, le=100)]
VersionString = Annotated[str, StringConstraints(min_length=1, max_length=63)]


class LoraAdapter(ApiModel):
    """A LoRA adapter served beside the base model."""

    name: DnsLabel = Field(description="Model name clients request to use this adapter.")
    model: ModelReference = Field(
        description="The adapter's registered version (a lora TrainingJob's output)."
    )


class Engine(ApiModel):
    """vLLM engine arguments; the same on the GPU image and the CPU build."""

    served_model_name: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        None, description="Model name in the OpenAI API; defaults to model.name."
    )
    max_model_len: int | None = Field(
        None, ge=16, le=10485760, description="Context length; defaults to the model's."
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto",
        description=(
            "Weight and activation dtype; int4 weights (W4A16) and int8 weights and activations (W8A8)"
            " need auto, bfloat16 or float16."
        ),
    )
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs each replica shards the model over.")
    quantization: Literal["awq", "gptq", "fp8", "bitsandbytes", "compressed-tensors"] | None = Field(
        None,
        description=(
            "vLLM's quantization method for the weights. Omit it for a version a quantize TrainingJob"
            " registered: its manifest says how its weights are stored and the operator passes that;"
            " a different value here is refused (WrongContent). fp8 on an unquantized version makes"
            " vLLM quantize it as it loads."
        ),
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use for weights and KV cache."
    )
    lora_adapters: list[LoraAdapter] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "LoRA adapters to load; names must be unique. With any, the gateway refuses prompt "
            "logprobs (400): vLLM computes them with the wrong LoRA mapping (docs/operations.md)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    extra_args: list[Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=list,
        max_length=32,
        description="Further vLLM command-line arguments, passed as given.",
    )


class Autoscaling(ApiModel):
    """Replica bounds and the vLLM signals that drive scaling between them."""

    cel_rules = (
        Rule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not exceed maxReplicas",
            lambda m: m.min_replicas <= m.max_replicas,
        ),
        Rule(
            "self.minReplicas > 0 || self.scaleToZero",
            "minReplicas 0 needs scaleToZero: true",
            lambda m: m.min_replicas > 0 or m.scale_to_zero,
        ),
        Rule(
            "!self.scaleToZero || self.engine == 'keda'",
            "scaleToZero needs engine keda: a HorizontalPodAutoscaler cannot scale to zero",
            lambda m: not m.scale_to_zero or m.engine == "keda",
        ),
    )

    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas while the model gets traffic.")
    max_replicas: int = Field(1, ge=1, le=1000, description="Most replicas.")
    scale_to_zero: bool = Field(
        False, description="Scale to zero replicas when idle; the gateway queues requests while one starts."
    )
    target_queue_depth: int | None = Field(
        None, ge=1, description="Waiting requests per replica to aim for (vllm:num_requests_waiting)."
    )
    target_kv_cache_usage: float | None = Field(
        None, gt=0, le=1, description="KV-cache usage per replica to aim for, 0-1 (vllm:kv_cache_usage_perc)."
    )
    stabilization_window_seconds: int = Field(
        300, ge=0, le=3600, description="How long load must stay low before scaling down, or to zero."
    )
    engine: Literal["keda", "hpa"] = Field("keda", description="Autoscaler: a KEDA ScaledObject or an HPA.")


class CanaryAnalysis(ApiModel):
    """Checks the canary must pass at each step; the stable version is the baseline."""

    interval_seconds: int = Field(
        60,
        ge=10,
        le=86400,
        description=(
            "Time between analyses, and per step. The analysis window is never shorter than four scrape"
            " intervals of the gateway's monitor (60 s at the operator's default 15 s): a shorter"
            " interval is lengthened to that, since Prometheus needs two samples in a window to see a"
            " rate."
        ),
    )
    max_error_rate: Fraction | None = Field(
        0.05, description="Largest allowed fraction of requests answered 5xx (not 429 or 4xx)."
    )
    max_latency_ratio: float | None = Field(
        None, gt=0, description="Largest allowed canary p95 latency divided by the stable version's."
    )
    max_p95_latency_ms: int | None = Field(
        None, ge=1, description="Largest allowed p95 latency in milliseconds."
    )


class Canary(ApiModel):
    """A second model version that gets a share of the traffic until it is promoted or rolled back."""

    cel_rules = (
        Rule(
            "!has(self.steps) || self.steps.isSorted()",
            "steps must be in ascending order",
            lambda m: m.steps == sorted(m.steps),
        ),
    )

    model: ModelReference = Field(description="The candidate version.")
    weight: Percent = Field(10, description="Percentage of requests sent to the canary at first.")
    steps: list[Percent] = Field(
        default_factory=list,
        max_length=20,
        description="Later weights, ascending; each is held for one passing analysis interval.",
    )
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis, description="Analysis of each step.")
    auto_rollback: bool = Field(True, description="Send all traffic back to stable when an analysis fails.")


class Rollout(ApiModel):
    """How a new model version replaces the serving one."""

    canary: Canary | None = Field(None, description="Canary release; omit to replace the version at once.")


class Alerts(ApiModel):
    """Service-level objectives, turned into PrometheusRule alerts."""

    p95_latency_ms: int | None = Field(None, ge=1, description="Alert when p95 request latency exceeds this.")
    max_error_rate: Fraction | None = Field(
        None,
        description="Alert when the fraction of requests answered 5xx (not 429 or 4xx) exceeds this.",
    )
    max_queue_depth: int | None = Field(None, ge=1, description="Alert when waiting requests exceed this.")
    max_drift_score: Fraction | None = Field(
        None,
        description=(
            "Alert when the drift score (1 - the drift test's p-value) exceeds this: 0.99 alerts at p < 0.01."
        ),
    )


class Drift(ApiModel):
    """Compare live prompts with reference data to detect distribution drift."""

    cel_rules = (
        Rule(
            "!self.enabled || has(self.referenceData)",
            "referenceData is required when drift detection is enabled",
            lambda m: not m.enabled or m.reference_data is not None,
        ),
    )

    enabled: bool = Field(True, description="Run the drift monitor.")
    reference_data: ObjectStorageLocation | None = Field(
        None, description="Directory of jsonl files with a text field, representative of the training data."
    )
    sample_rate: Fraction = Field(0.1, description="Fraction of requests whose prompts the monitor scores.")
    prompts: ObjectStorageLocation | None = Field(
        None,
        description=(
            "Where the gateway writes the sampled prompts that the monitor reads. Default: drift-prompts/"
            " under gateway.payloadSampling.destination; required when payload sampling is off. Give it a"
            " Secret of its own: the internet-facing gateway never gets the registry's credentials."
        ),
    )
    retention_days: RetentionDays | None = retention_days_field("sampled drift prompts")


class Monitoring(ApiModel):
    """Metrics, alerts and drift detection."""

    service_monitor: bool = Field(
        False,
        description=(
            "Scrape everything (prometheus-operator PodMonitors and ServiceMonitor) and add a Grafana"
            " dashboard. Autoscaling, scale to zero, canary analysis and alerts get the monitors they"
            " read whatever this says."
        ),
    )
    alerts: Alerts | None = Field(None, description="Alert thresholds; omit for no alerts.")
    drift: Drift | None = Field(None, description="Drift monitor; omit to skip it.")


class RateLimit(ApiModel):
    """Limits per API key."""

    requests_per_minute: int | None = Field(None, ge=1, description="Requests per minute.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Prompt plus completion tokens per minute.")
    burst: int | None = Field(None, ge=1, description="Requests allowed above the rate in a burst.")


class PayloadSampling(ApiModel):
    """Store a sample of requests and responses, e.g. for evaluation and retraining data."""

    rate: Fraction = Field(0.01, description="Fraction of requests stored.")
    destination: ObjectStorageLocation = Field(description="Where samples are written, as jsonl.")
    retention_days: RetentionDays | None = retention_days_field("payload samples")


class Feedback(ApiModel):
    """User feedback on completions: `POST /v1/feedback` on the gateway (docs/operations.md, User
    feedback), stored beside the payload samples."""

    enabled: bool = Field(
        True,
        description="Accept feedback. On by default whenever payloadSampling is set (its destination holds"
        " the records; a sampling rate of 0 stores feedback only).",
    )
    id_ttl_seconds: int = Field(
        604800,
        ge=60,
        le=31622400,
        description="Feedback on a completion is accepted this long after it was answered (default 7 days).",
    )
    retention_days: RetentionDays | None = retention_days_field("feedback records")


class PiiRedaction(ApiModel):
    """Personal data the gateway redacts, and where (see docs/operations.md, PII redaction)."""

    scope: Literal["stored", "prompts", "promptsAndAnswers"] = Field(
        "promptsAndAnswers",
        description=(
            "stored: only what the gateway stores (sampled payloads and drift prompts); the model and the"
            " client see the traffic as it is. prompts: also every text of a request before it reaches"
            " the model (messages, tool-call arguments, prompt, input). promptsAndAnswers: also every"
            " text of the answer before it reaches the client (content, reasoning, refusal, tool-call"
            " arguments, logprobs tokens), streamed or not."
        ),
    )
    entities: list[Literal["email", "phone", "creditCard", "ipAddress"]] = Field(
        ["email", "phone", "creditCard", "ipAddress"],
        min_length=1,
        max_length=4,
        description="Kinds of personal data to redact; each becomes a placeholder such as [EMAIL].",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    regions: list[PhoneRegion] = phone_regions_field()


class GatewayTls(ApiModel):
    """HTTPS for the gateway's clients, from a certificate Secret of type kubernetes.io/tls (the layout
    cert-manager writes: `tls.crt`, `tls.key`, optionally `ca.crt`)."""

    secret_name: DnsSubdomain = Field(
        description="Secret with the gateway's certificate (`tls.crt`, with its chain) and key (`tls.key`),"
        " e.g. a cert-manager Certificate's spec.secretName; its names should cover the Service"
        " (<name>-gateway.<namespace>.svc). A renewed certificate is served without a restart."
    )


class Gateway(ApiModel):
    """The gateway in front of vLLM: authentication, limits, queueing, redaction and sampling."""

    cel_rules = (
        Rule(
            "!has(self.feedback) || !self.feedback.enabled || has(self.payloadSampling)",
            "gateway.feedback needs gateway.payloadSampling: feedback is stored beside the payload samples"
            " (payloadSampling.rate 0 stores feedback only); or set feedback.enabled false",
            lambda m: m.feedback is None or not m.feedback.enabled or m.payload_sampling is not None,
            field_path=".feedback",
        ),
    )

    api_keys_secret_ref: SecretRef | None = Field(
        None, description="Secret whose values are the accepted API keys; omit to allow anonymous access."
    )
    rate_limit: RateLimit | None = Field(
        None,
        description=(
            "Rate limits per API key, for the whole gateway; each of the `replicas` enforces its share"
            " (rounded up). Omit for none."
        ),
    )
    pii_redaction: PiiRedaction | None = Field(
        None, description="Redact personal data (what and where: see scope); omit for no redaction."
    )
    payload_sampling: PayloadSampling | None = Field(None, description="Payload sampling; omit for none.")
    feedback: Feedback | None = Field(
        None,
        description="User feedback on completions (POST /v1/feedback); omit: on whenever payloadSampling is"
        " set.",
    )
    max_queue: int = Field(
        256,
        ge=0,
        le=100000,
        description="Requests held while replicas are busy or starting; beyond that, 429.",
    )
    queue_timeout_seconds: int = Field(
        60, ge=1, le=3600, description="Longest a request waits in the queue before a 503."
    )
    replicas: int = Field(
        2, ge=1, le=100, description="Gateway replicas; they share no state: each gets a share of the limits."
    )
    tls: GatewayTls | None = Field(
        None,
        description="Serve HTTPS (Service port 443) with this certificate; omit: plain HTTP on port 80.",
    )


def _registry_secret(spec: ModelDeploymentSpec) -> str | None:
    ref = spec.registry.s3.credentials_secret_ref if spec.registry.s3 else None
    return ref.name if ref else None


def _payload_secret(spec: ModelDeploymentSpec) -> str | None:
    sampling = spec.gateway.payload_sampling
    s3 = sampling.destination.s3 if sampling else None
    return s3.credentials_secret_ref.name if s3 and s3.credentials_secret_ref else None


def _drift_prompts_secret(spec: ModelDeploymentSpec) -> str | None:
    drift = spec.monitoring.drift
    s3 = drift.prompts.s3 if drift and drift.prompts else None
    return s3.credentials_secret_ref.name if s3 and s3.credentials_secret_ref else None


class ModelDeploymentSpec(ApiModel):
    """Serve a registered model with vLLM, with autoscaling, canary releases, monitoring and a gateway."""

    # CEL cannot compare the two references as objects (each schema node is its own type): compare fields.
    cel_rules = (
        Rule(
            "!has(self.rollout) || !has(self.rollout.canary)"
            " || self.rollout.canary.model.name != self.model.name"
            " || has(self.rollout.canary.model.version) != has(self.model.version)"
            " || (has(self.model.version) && self.rollout.canary.model.version != self.model.version)"
            " || (has(self.model.alias) && self.rollout.canary.model.alias != self.model.alias)",
            "rollout.canary.model must differ from model",
            lambda m: m.rollout is None or m.rollout.canary is None or m.rollout.canary.model != m.model,
            field_path=".rollout",
        ),
        Rule(
            "!has(self.monitoring) || !has(self.monitoring.drift) || !self.monitoring.drift.enabled"
            " || has(self.monitoring.drift.prompts)"
            " || (has(self.gateway) && has(self.gateway.payloadSampling))",
            "monitoring.drift.prompts is required when gateway.payloadSampling is off: the gateway writes the"
            " sampled prompts there (it never gets the registry's credentials)",
            lambda m: (
                m.monitoring.drift is None
                or not m.monitoring.drift.enabled
                or m.monitoring.drift.prompts is not None
                or m.gateway.payload_sampling is not None
            ),
            field_path=".monitoring.drift",
        ),
        Rule(
            "!has(self.monitoring) || !has(self.monitoring.drift) || !has(self.monitoring.drift.prompts)"
            " || !has(self.monitoring.drift.prompts.s3)"
            " || !has(self.monitoring.drift.prompts.s3.credentialsSecretRef)"
            " || !has(self.registry.s3) || !has(self.registry.s3.credentialsSecretRef)"
            " || self.monitoring.drift.prompts.s3.credentialsSecretRef.name"
            " != self.registry.s3.credentialsSecretRef.name",
            "monitoring.drift.prompts must not use the registry's Secret: the internet-facing gateway"
            " writes there",
            lambda m: _drift_prompts_secret(m) is None or _drift_prompts_secret(m) != _registry_secret(m),
            field_path=".monitoring.drift.prompts",
        ),
        Rule(
            "!has(self.gateway) || !has(self.gateway.payloadSampling)"
            " || !has(self.gateway.payloadSampling.destination.s3)"
            " || !has(self.gateway.payloadSampling.destination.s3.credentialsSecretRef)"
            " || !has(self.registry.s3) || !has(self.registry.s3.credentialsSecretRef)"
            " || self.gateway.payloadSampling.destination.s3.credentialsSecretRef.name"
            " != self.registry.s3.credentialsSecretRef.name",
            "gateway.payloadSampling.destination must not use the registry's Secret: the internet-facing"
            " gateway writes there (payloads, ratings)",
            lambda m: _payload_secret(m) is None or _payload_secret(m) != _registry_secret(m),
            field_path=".gateway.payloadSampling.destination",
        ),
        Rule(
            "!has(self.engine) || !has(self.engine.tensorParallelSize) || self.engine.tensorParallelSize <= 1"
            " || (has(self.resources) && has(self.resources.gpus)"
            " && self.resources.gpus >= self.engine.tensorParallelSize)",
            "engine.tensorParallelSize must not exceed resources.gpus: vLLM shards each replica over that"
            " many GPUs of its pod",
            lambda m: m.engine.tensor_parallel_size <= 1 or m.resources.gpus >= m.engine.tensor_parallel_size,
            field_path=".engine.tensorParallelSize",
        ),
    )

    model: ModelReference = Field(description="The stable version to serve.")
    registry: ObjectStorageLocation = Field(
        description="The model registry that model, canary and adapter references resolve in; the serving"
        " pods download the resolved versions from it."
    )
    engine: Engine = Field(default_factory=Engine, description="vLLM engine arguments.")
    resources: Resources = Field(
        default_factory=Resources, description="Compute per replica; autoscaling sets the replica count."
    )
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Replica count and scaling.")
    rollout: Rollout | None = Field(None, description="Release strategy for a new version.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Metrics, alerts and drift.")
    gateway: Gateway = Field(default_factory=Gateway, description="Gateway settings.")
    allow_ungated: bool = Field(
        False,
        description="Also serve versions registered without any gate (from a TrainingJob whose"
        " spec.evaluation declares no gates). Off by default: a version is served only when it declared"
        " gates and passed every one; a version that failed a gate is never served.",
    )
    suspend: bool = Field(
        False,
        description="Stop serving, keeping everything else: the gateway stays up and answers every OpenAI"
        " request with 503 and error code model_suspended (requests already at a model server finish);"
        " once it has drained (Prometheus; LLMOPS_SUSPEND_DRAIN_SECONDS at most) every vLLM Deployment"
        " (stable, canary; a replaced version is let go) goes to 0 replicas, its KEDA ScaledObject"
        " paused at 0 (an HPA is kept: a target at 0 deactivates it); a canary holds its step. Services,"
        " ConfigMaps, monitors, Secrets and the registry stay. false: the replicas, autoscalers and"
        " canary come back as the spec and status say.",
    )


class ServingVersion(ApiModel):
    """A model version currently deployed."""

    name: DnsLabel = Field(description="Registered model name.")
    version: Annotated[str, StringConstraints(min_length=1, max_length=63)] = Field(
        description="Resolved version."
    )
    role: Literal["stable", "canary", "previous"] = Field(
        description="stable, canary, or previous (being replaced; kept until the new one is ready)."
    )
    weight: Percent = Field(description="Percentage of requests it receives.")
    replicas: int = Field(0, ge=0, description="Replicas wanted.")
    ready_replicas: int = Field(0, ge=0, description="Replicas ready to serve.")
    deployment: DnsSubdomain | None = Field(None, description="Name of the vLLM Deployment serving it.")


class ResolvedAlias(ApiModel):
    """A reference of the spec that names a model by alias, and the version the alias named when the
    operator last read the registry (at least every `LLMOPS_ALIAS_POLL_SECONDS`, or every objects ÷
    `LLMOPS_ALIAS_POLL_RATE` seconds when more objects follow aliases)."""

    field_path: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="The reference: spec.model, spec.rollout.canary.model or"
        " spec.engine.loraAdapters[<name>].model."
    )
    name: DnsLabel = Field(description="Registered model name.")
    alias: DnsLabel = Field(description="The alias, e.g. champion.")
    version: Annotated[str, StringConstraints(min_length=1, max_length=63)] = Field(
        description="The version it resolved to."
    )


class CanaryStatus(ApiModel):
    """Where the canary release stands."""

    step: int = Field(0, ge=0, description="Index of the current step; 0 is the initial weight.")
    weight: Percent = Field(description="Current canary weight.")
    verdict: Literal["Analysing", "Promoted", "RolledBack", "Halted"] = Field(
        description="Outcome so far; Halted: an analysis failed and autoRollback is off."
    )
    model: DnsLabel | None = Field(None, description="Registered model name of the canary.")
    version: VersionString | None = Field(None, description="Resolved canary version this status is about.")
    baseline_version: VersionString | None = Field(
        None, description="Resolved stable version the canary is compared with."
    )
    step_start_time: datetime | None = Field(
        None, description="When the current step began (the canary was ready at its weight)."
    )
    error_rate: float | None = Field(None, ge=0, le=1, description="Canary error rate at the last analysis.")
    p95_latency_ms: float | None = Field(None, ge=0, description="Canary p95 latency at the last analysis.")
    latency_ratio: float | None = Field(
        None, ge=0, description="Canary p95 over stable p95 at the last analysis."
    )
    last_analysis_time: datetime | None = Field(None, description="When the last analysis ran.")
    inconclusive_analyses: int = Field(
        0, ge=0, description="Analyses in a row that reached no verdict (no canary traffic, or no data)."
    )
    window_seconds: int | None = Field(
        None, ge=0, description="The analysis window in use: intervalSeconds, or four scrape intervals."
    )
    message: ShortText | None = Field(None, description="What the last analysis found.")


class ModelDeploymentStatus(Status):
    """Observed state of a ModelDeployment."""

    phase: Phase | None = Field(
        None, description="Pending, Progressing, Ready, Degraded, Failed, ScaledToZero or Suspended."
    )
    endpoint: Url | None = Field(None, description="OpenAI-compatible base URL of the gateway.")
    versions: list[ServingVersion] = Field(
        default_factory=list,
        max_length=3,
        description="Versions being served, one per role.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["role"]},
    )
    replicas: int | None = Field(None, ge=0, description="Replicas wanted, all versions together.")
    ready_replicas: int | None = Field(None, ge=0, description="Replicas ready, all versions together.")
    canary: CanaryStatus | None = Field(None, description="Canary release progress.")
    aliases: list[ResolvedAlias] = Field(
        default_factory=list,
        max_length=34,
        description="Each reference that names a model by alias and the version it resolved to; an alias"
        " moved in the registry is followed within the operator's alias poll (LLMOPS_ALIAS_POLL_SECONDS,"
        " 30 s by default, up to 300 objects that follow aliases; beyond, objects ÷ LLMOPS_ALIAS_POLL_RATE"
        " seconds) plus the rollout.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["fieldPath"]},
    )
    inventory: list[Annotated[str, StringConstraints(max_length=512)]] = Field(
        default_factory=list,
        max_length=64,
        description="Child objects the operator applied (apiVersion/kind/name), each recorded before its"
        " first apply so that a crash leaves none unlisted; those no longer wanted are deleted by name.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    retention: list[StoreRetention] = Field(
        default_factory=list,
        max_length=5,
        description="Retention of the data the deployment's gateway writes: one entry per store swept.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["store"]},
    )
