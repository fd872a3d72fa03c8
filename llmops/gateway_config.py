"""The gateway's config file: the contract between the ModelDeployment operator and `llmops.serving.gateway`.

The operator renders one `GatewayConfig` per ModelDeployment as JSON (`GatewayConfig.dumps()`) into
a ConfigMap, mounts it into the gateway pod and starts

    python -m llmops.serving.gateway --config /etc/llmops/gateway/config.json --port 8000

The mapping of a ModelDeployment onto this file is the operator's, in one place:
llmops/operators/modeldeployment/gateway.py:gateway_config. This module is the contract only: the types both
sides read, and `per_replica`, a fact about the gateway (each replica keeps its own buckets). Field
names are camelCase on the wire, like every llmops API type, and unknown fields are rejected, so a
typo fails at start-up.

Example (what the operator writes for ModelDeployment `llama` in namespace `team-a`, a canary at 10%):

    {
      "servedModelName": "llama",
      "upstreams": [
        {"version": "3", "role": "stable", "weight": 90,
         "service": {"host": "llama-3-vllm.team-a.svc", "port": 8000}},
        {"version": "4", "role": "canary", "weight": 10,
         "service": {"host": "llama-4-vllm.team-a.svc", "port": 8000}}
      ],
      "apiKeysPath": "/etc/llmops/api-keys",
      "rateLimit": {"requestsPerMinute": 600, "tokensPerMinute": 200000, "burst": 20},
      "maxQueue": 256, "queueTimeoutSeconds": 60, "scaleToZeroHoldSeconds": 300,
      "piiRedaction": {"scope": "promptsAndAnswers", "entities": ["email", "phone"], "regions": ["US"]},
      "payloadSampling": {"rate": 0.01, "destination": {"s3": {"bucket": "samples", "prefix": "llama"}}}
    }

While the ModelDeployment is suspended (`spec.suspend`), the operator adds
`"suspension": {"modelDeployment": "llama", "namespace": "team-a"}` and keeps the upstreams as they were.

Upstreams: each served version is a group of vLLM replicas, listed statically (`replicas`) or found by
resolving a *headless* Service (`service`): its DNS name answers with the addresses of the ready pods
only, so an empty answer means the version is scaled to zero. The gateway health-checks every replica
(`GET /health`) and only routes to those that answer.

Secrets: the API keys Secret is mounted as a volume at `apiKeysPath` (a directory: one file per key,
the file name is the key's id in logs and metrics; or a file with one key per line). Keys are never
logged. S3 credentials for the sampling destination reach the pod as the environment variables
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (secretKeyRef to `credentialsSecretRef`), which boto3 reads.
The key that signs completion ids (`feedback.keyPath`) is a Secret the operator creates, mounted at
FEEDBACK_KEY_MOUNT; it is never logged.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from llmops.api.common import (
    ApiModel,
    DnsLabel,
    DnsSubdomain,
    Fraction,
    ObjectStorageLocation,
    Rule,
    Url,
)
from llmops.api.modeldeployment import PiiRedaction, RateLimit

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
VersionLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9._-]+$")]


class ServiceEndpoints(ApiModel):
    """A headless Service whose DNS name resolves to the ready replicas of one version."""

    host: DnsSubdomain = Field(description="DNS name, e.g. llama-v3.team-a.svc.cluster.local.")
    port: int = Field(8000, ge=1, le=65535, description="vLLM's port on each pod.")
    scheme: Literal["http", "https"] = Field("http", description="Scheme of the replicas' URLs.")


class UpstreamGroup(ApiModel):
    """The replicas that serve one model version."""

    cel_rules = (
        Rule(
            "size(self.replicas) > 0 != has(self.service)",
            "set exactly one of replicas or service",
            lambda m: bool(m.replicas) != (m.service is not None),
        ),
    )

    version: VersionLabel = Field(description="Model version; the `version` label of the gateway's metrics.")
    role: Literal["stable", "canary", "previous"] = Field("stable", description="stable, canary or previous.")
    weight: int = Field(100, ge=0, le=100, description="Share of requests, relative to the other groups.")
    replicas: list[Url] = Field(
        default_factory=list,
        max_length=1000,
        description="Base URLs of the replicas, e.g. http://10.0.0.7:8000.",
    )
    service: ServiceEndpoints | None = Field(None, description="Headless Service to resolve instead.")


# The files the gateway's samplers write under a destination (llmops/serving/sampler.py), read by
# retention (llmops/operators/retention.py) and erasure (llmops/erasure.py): date, time, host, kind,
# sequence.
SAMPLE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}/(\d{6})-[^/]+-(payload|prompt|feedback)-\d+\.jsonl$")


def sample_kind(key: str) -> str | None:
    """payload, prompt or feedback for a key (relative to its destination) that the gateway's sampler
    wrote, else None."""
    m = SAMPLE_KEY.match(key)
    return m.group(2) if m else None


class Sampling(ApiModel):
    """Write a random sample of requests as jsonl to object storage."""

    rate: Fraction = Field(description="Fraction of requests sampled.")
    destination: ObjectStorageLocation = Field(description="Where the jsonl files go.")
    flush_interval_seconds: float = Field(10, gt=0, le=3600, description="Longest a record waits in memory.")
    max_buffered: int = Field(
        10000, ge=1, le=1_000_000, description="Records held in memory at most; beyond that they are dropped."
    )


class Feedback(ApiModel):
    """`POST /v1/feedback`: where feedback records go, and the key that signs completion ids
    (llmops.serving.feedback says how)."""

    model_deployment: DnsSubdomain = Field(description="The ModelDeployment's name, for the records.")
    destination: ObjectStorageLocation = Field(description="Where the feedback jsonl files go.")
    key_path: str = Field(
        description="Mounted Secret file: the key (32 random bytes) that signs completion ids."
    )
    id_ttl_seconds: float = Field(
        7 * 24 * 3600,
        gt=0,
        le=366 * 24 * 3600,
        description="Feedback is accepted this long after the answer.",
    )
    flush_interval_seconds: float = Field(10, gt=0, le=3600, description="Longest a record waits in memory.")
    max_buffered: int = Field(
        10000, ge=1, le=1_000_000, description="Records held in memory at most; beyond that they are dropped."
    )


class Suspension(ApiModel):
    """The ModelDeployment is suspended (its `spec.suspend`): the gateway answers every OpenAI request
    with 503 and error code `model_suspended`, naming it. Applies live, like the upstreams."""

    model_deployment: DnsSubdomain = Field(description="The ModelDeployment's name, for the message.")
    namespace: DnsLabel = Field(description="Its namespace, for the message.")


class GatewayConfig(ApiModel):
    """Everything `python -m llmops.serving.gateway` needs; see the module docstring for an example."""

    cel_rules = (
        Rule(
            "self.upstreams.all(u, self.upstreams.exists_one(v, v.version == u.version))",
            "upstream versions must be unique",
            lambda m: len({u.version for u in m.upstreams}) == len(m.upstreams),
        ),
        Rule(
            "self.upstreams.exists(u, u.weight > 0)",
            "at least one upstream needs a weight above 0",
            lambda m: any(u.weight > 0 for u in m.upstreams),
        ),
    )

    served_model_name: ModelName = Field(
        description="The model name clients send (vLLM's --served-model-name)."
    )
    extra_model_names: list[ModelName] = Field(
        default_factory=list, max_length=32, description="Further accepted names, e.g. LoRA adapters."
    )
    upstreams: list[UpstreamGroup] = Field(min_length=1, max_length=8, description="One group per version.")
    lora_enabled: bool = Field(
        False,
        description=(
            "The replicas run vLLM with --enable-lora: requests for prompt logprobs are refused (400), since "
            "vLLM computes them with the wrong LoRA mapping (serving.endpoints.PROMPT_LOGPROBS_WITH_LORA)."
        ),
    )

    api_keys_path: str | None = Field(
        None,
        description="Mounted Secret: a directory (one key per file) or a file (one per line); omit: open.",
    )
    rate_limit: RateLimit | None = Field(None, description="Limits applied to each API key separately.")

    max_outstanding_per_replica: int = Field(
        64, ge=1, le=100000, description="Requests in flight per replica before new ones wait in the queue."
    )
    max_queue: int = Field(256, ge=0, le=100000, description="Requests waiting at most; beyond that, 429.")
    queue_timeout_seconds: float = Field(
        60, gt=0, le=3600, description="Longest wait in the queue; then 503."
    )
    scale_to_zero_hold_seconds: float = Field(
        0,
        ge=0,
        le=3600,
        description="While no replica is ready, hold requests this long (a version scaled to zero wakes up);"
        " 0: answer 503 at once.",
    )

    pii_redaction: PiiRedaction | None = Field(None, description="What personal data to redact, and where.")
    payload_sampling: Sampling | None = Field(None, description="Sampled request/response pairs.")
    drift_sampling: Sampling | None = Field(None, description="Sampled prompts for the drift monitor.")
    feedback: Feedback | None = Field(None, description="User feedback on completions; omit: no endpoint.")
    suspension: Suspension | None = Field(
        None,
        description="Set while the ModelDeployment is suspended: every OpenAI request is answered 503"
        " (model_suspended); requests already at a replica finish. Omit: serving. Applies live.",
    )

    health_check_interval_seconds: float = Field(
        2, gt=0, le=300, description="Replica health polling period."
    )
    dns_refresh_seconds: float = Field(5, gt=0, le=300, description="How often Services are resolved again.")
    upstream_timeout_seconds: float = Field(600, gt=0, le=86400, description="Longest one upstream request.")
    drain_timeout_seconds: float = Field(
        30, ge=0, le=3600, description="On SIGTERM, wait this long for requests."
    )
    max_request_bytes: int = Field(
        4 << 20, ge=1024, le=256 << 20, description="Largest request body accepted."
    )
    anomaly_window_seconds: float = Field(
        10, gt=0, le=3600, description="Latency and error rate are judged per window of this length."
    )

    def model_names(self) -> set[str]:
        return {self.served_model_name, *self.extra_model_names}

    def dumps(self) -> str:
        """The file's text, as the operator puts it in the ConfigMap."""
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)

    @classmethod
    def load(cls, path: str | Path) -> GatewayConfig:
        return cls.model_validate_json(Path(path).read_text())


API_KEYS_MOUNT = "/etc/llmops/api-keys"
FEEDBACK_KEY_MOUNT = "/etc/llmops/feedback-key"
FEEDBACK_KEY_FILE = "key"  # the Secret's data key, and the file name under FEEDBACK_KEY_MOUNT


def per_replica(limit: RateLimit | None, replicas: int) -> RateLimit | None:
    """Each gateway replica keeps its own buckets: give each its share of the limits (rounded up)."""
    if limit is None or replicas <= 1:
        return limit

    def share(value: int | None) -> int | None:
        return None if value is None else max(1, math.ceil(value / replicas))

    return RateLimit(
        requests_per_minute=share(limit.requests_per_minute),
        tokens_per_minute=share(limit.tokens_per_minute),
        burst=share(limit.burst),
    )
