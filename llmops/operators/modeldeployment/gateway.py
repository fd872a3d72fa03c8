"""The gateway (llmops/serving/gateway.py) in front of the model servers, and the whole mapping of a
ModelDeployment's spec onto its config (llmops.gateway_config, the contract with the gateway).

    ConfigMap                      <md>-gateway          config.json: `gateway_config`
    Deployment + Service           <md>-gateway          the gateway; Service port 80 (http) -> GATEWAY_PORT,
                                                         with spec.gateway.tls 443 (https): the Secret
                                                         mounted at TLS_MOUNT (`gateway_tls`)
    Secret                         <md>-feedback-key     with feedback on: the key that signs completion
                                                         ids (`feedback_key_secret`; created once, never
                                                         applied again, so the key stays)

`gateway_config` is computed once per reconcile (builders.shared_children) and given to both the
ConfigMap and the Deployment: the Deployment's pods carry a digest of the fields the gateway reads
only at start (`restart_digest`), so changing one of them rolls the gateway; upstreams and weights
reload live from the mounted ConfigMap.
"""

from __future__ import annotations

import json
import os

from llmops.api.common import SecretKeysRef
from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.engine import lora_enabled
from llmops.gateway_config import (
    API_KEYS_MOUNT,
    FEEDBACK_KEY_FILE,
    FEEDBACK_KEY_MOUNT,
    Feedback,
    GatewayConfig,
    Sampling,
    ServiceEndpoints,
    Suspension,
    UpstreamGroup,
    per_replica,
)
from llmops.operators.manifests import (
    Manifest,
    ca_bundle_mounts,
    container_security,
    credentials_env,
    http_probe,
    location_secret,
    owned_object,
    pod_security,
    topology_spread,
)
from llmops.operators.modeldeployment.drift import drift_destination, drift_on
from llmops.operators.modeldeployment.names import (
    child_labels,
    child_selector,
    digest,
    feedback_key_name,
    gateway_name,
)
from llmops.operators.modeldeployment.plan import Plan, ServingSettings
from llmops.operators.modeldeployment.vllm import VLLM_PORT

GATEWAY_PORT = 8000
GATEWAY_CONFIG_DIR = "/etc/llmops/gateway"
TLS_MOUNT = "/etc/llmops/tls"  # the certificate Secret (tls.crt, tls.key): llmops.serving.tls
GATEWAY_PRESTOP_SECONDS = 5


def gateway_config(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> GatewayConfig:
    """The gateway's config for this plan: the whole mapping of the spec onto the gateway.

    - upstreams: one group per served version (its headless Service), weights from the plan;
    - model names: spec.engine.servedModelName (else spec.model.name), plus each LoRA adapter's name;
    - spec.gateway: API keys (the Secret is mounted at API_KEYS_MOUNT), queue, PII redaction, payload
      sampling, and the rate limit shared out over the gateway's replicas (`per_replica`: each keeps
      its own token buckets, so with N replicas a key gets about the limit, not N times it);
    - with spec.autoscaling.scaleToZero, requests are held while no replica is ready, for the
      operator's scale_to_zero_hold_seconds (a cold start: image pull, model download, vLLM start),
      at most ten queue timeouts; without, 0 (answer 503 at once);
    - with spec.monitoring.drift on, a sample of the prompts goes to `drift_destination`;
    - with feedback on (`feedback_on`), `POST /v1/feedback` stores records beside the payload samples,
      and completion ids are signed with the key of `feedback_key_secret`, mounted at FEEDBACK_KEY_MOUNT;
    - with spec.suspend, `suspension`: the gateway answers every OpenAI request 503 model_suspended
      (live, no restart: `restart_digest` leaves it out); the upstreams stay as the plan has them.
    """
    gateway = spec.gateway
    namespace = owner["metadata"]["namespace"]
    upstreams = [
        UpstreamGroup(
            version=v.version,
            role="canary" if v.role == "canary" else "stable",
            weight=v.weight,
            service=ServiceEndpoints(host=f"{v.deployment}.{namespace}.svc", port=VLLM_PORT),
        )
        for v in plan.versions
    ]
    drift_sampling = None
    if drift_on(spec):
        assert spec.monitoring.drift is not None
        drift_sampling = Sampling(rate=spec.monitoring.drift.sample_rate, destination=drift_destination(spec))
    sampling = gateway.payload_sampling
    hold = min(settings.scale_to_zero_hold_seconds, gateway.queue_timeout_seconds * 10)
    return GatewayConfig(
        served_model_name=spec.engine.served_model_name or spec.model.name,
        extra_model_names=[a.name for a in spec.engine.lora_adapters],
        upstreams=upstreams,
        lora_enabled=lora_enabled(spec.engine),
        api_keys_path=API_KEYS_MOUNT if gateway.api_keys_secret_ref else None,
        rate_limit=per_replica(gateway.rate_limit, gateway.replicas),
        max_queue=gateway.max_queue,
        queue_timeout_seconds=gateway.queue_timeout_seconds,
        scale_to_zero_hold_seconds=hold if spec.autoscaling.scale_to_zero else 0,
        pii_redaction=gateway.pii_redaction,
        payload_sampling=Sampling(rate=sampling.rate, destination=sampling.destination) if sampling else None,
        drift_sampling=drift_sampling,
        feedback=feedback_config(spec, owner),
        suspension=Suspension(model_deployment=owner["metadata"]["name"], namespace=namespace)
        if spec.suspend
        else None,
    )


def feedback_on(spec: ModelDeploymentSpec) -> bool:
    """Feedback is on with payload sampling, unless spec.gateway.feedback.enabled is false (its CEL rule
    refuses feedback without payload sampling)."""
    gateway = spec.gateway
    return gateway.payload_sampling is not None and (gateway.feedback is None or gateway.feedback.enabled)


def feedback_config(spec: ModelDeploymentSpec, owner: Manifest) -> Feedback | None:
    if not feedback_on(spec):
        return None
    assert spec.gateway.payload_sampling is not None
    ttl = spec.gateway.feedback.id_ttl_seconds if spec.gateway.feedback else None
    return Feedback(
        model_deployment=owner["metadata"]["name"],
        destination=spec.gateway.payload_sampling.destination,
        key_path=f"{FEEDBACK_KEY_MOUNT}/{FEEDBACK_KEY_FILE}",
        **({"id_ttl_seconds": ttl} if ttl is not None else {}),
    )


def feedback_key_secret(owner: Manifest, key: str | None = None) -> Manifest:
    """The Secret `<md>-feedback-key` holding the key that signs completion ids (llmops.serving.feedback):
    64 hex digits of 32 random bytes (`os.urandom`) unless `key` is given. The reconcile creates it
    when absent and never applies it again (a new key would void every id issued); owned by the
    ModelDeployment, so it goes with it. Its value is never logged nor put in status or events."""
    labels = child_labels("llmops-gateway", "gateway")
    return owned_object(
        "v1", "Secret", feedback_key_name(owner["metadata"]["name"]), owner, labels, None,
        type="Opaque", stringData={FEEDBACK_KEY_FILE: key or os.urandom(32).hex()},
    )  # fmt: skip


def gateway_secret(spec: ModelDeploymentSpec) -> SecretKeysRef | None:
    """The one S3 credential the gateway gets: that of the payload samples, else of the drift prompts'
    location; never the registry's (CEL rules on ModelDeploymentSpec keep the two apart)."""
    sampling = spec.gateway.payload_sampling
    if sampling:
        return location_secret(sampling.destination)
    if drift_on(spec):
        assert spec.monitoring.drift is not None and spec.monitoring.drift.prompts is not None
        return location_secret(spec.monitoring.drift.prompts)
    return None


def gateway_configmap(owner: Manifest, config: GatewayConfig) -> Manifest:
    """The gateway's config.json (`gateway_config`), mounted at GATEWAY_CONFIG_DIR."""
    labels = child_labels("llmops-gateway", "gateway")
    return owned_object(
        "v1", "ConfigMap", gateway_name(owner["metadata"]["name"]), owner, labels, None,
        data={"config.json": config.dumps()},
    )  # fmt: skip


def restart_digest(config: GatewayConfig) -> str:
    """A hash of the config fields the gateway reads only at start; upstreams, weights and the
    suspension reload live (a suspend never restarts the gateway, so its in-flight requests finish)."""
    fields = config.to_dict()
    fields.pop("upstreams", None)
    fields.pop("suspension", None)
    return digest(json.dumps(fields, sort_keys=True), 16)


def gateway_argv(tls: bool = False) -> list[str]:
    config = f"{GATEWAY_CONFIG_DIR}/config.json"
    argv = ["python", "-m", "llmops.serving.gateway", "--config", config, "--port", str(GATEWAY_PORT)]
    return [*argv, "--tls-dir", TLS_MOUNT] if tls else argv


def gateway_port_name(spec: ModelDeploymentSpec) -> str:
    """The name of the gateway's port in its pods and Service: `https` with spec.gateway.tls, else `http`."""
    return "https" if spec.gateway.tls is not None else "http"


def gateway_tls(spec: ModelDeploymentSpec) -> tuple[list[dict], list[dict]]:
    """With spec.gateway.tls, the certificate Secret's volume and its mount at TLS_MOUNT (read-only,
    mode 0440: the key is readable by the gateway's group only); else none. The kubelet updates a
    mounted Secret in place when cert-manager renews it, and the gateway reloads it (serving.tls)."""
    tls = spec.gateway.tls
    if tls is None:
        return [], []
    volume = {"name": "tls", "secret": {"secretName": tls.secret_name, "defaultMode": 0o440}}
    return [volume], [{"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True}]


def gateway_deployment(
    spec: ModelDeploymentSpec, owner: Manifest, config: GatewayConfig, settings: ServingSettings
) -> Manifest:
    """The gateway's pods; `config` is what gateway_configmap holds (its start-only fields roll them)."""
    md = owner["metadata"]["name"]
    name = gateway_name(md)
    selector = child_selector(owner, "gateway")
    labels = child_labels("llmops-gateway", "gateway", **selector)
    volumes: list[dict] = [
        {"name": "config", "configMap": {"name": name}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict] = [
        {"name": "config", "mountPath": GATEWAY_CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    ca_volumes, ca_mounts = ca_bundle_mounts(
        *(s.destination for s in (config.payload_sampling, config.drift_sampling, config.feedback) if s)
    )
    volumes += ca_volumes
    mounts += ca_mounts
    if spec.gateway.api_keys_secret_ref:
        secret = {"secretName": spec.gateway.api_keys_secret_ref.name, "defaultMode": 0o440}
        volumes.append({"name": "api-keys", "secret": secret})
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_MOUNT, "readOnly": True})
    if config.feedback is not None:
        secret = {"secretName": feedback_key_name(md), "defaultMode": 0o440}
        volumes.append({"name": "feedback-key", "secret": secret})
        mounts.append({"name": "feedback-key", "mountPath": FEEDBACK_KEY_MOUNT, "readOnly": True})
    tls_volumes, tls_mounts = gateway_tls(spec)
    volumes += tls_volumes
    mounts += tls_mounts
    port = gateway_port_name(spec)
    scheme = "HTTPS" if spec.gateway.tls is not None else "HTTP"
    container = {
        "name": "gateway",
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": gateway_argv(spec.gateway.tls is not None),
        "ports": [{"name": port, "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *credentials_env(gateway_secret(spec)),
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": mounts,
        # Endpoints and kube-proxy drop a terminating pod a moment later: serve until then, then drain.
        "lifecycle": {"preStop": {"sleep": {"seconds": GATEWAY_PRESTOP_SECONDS}}},
        "readinessProbe": http_probe("/readyz", port, period=5, failures=2, timeout=2, scheme=scheme),
        "livenessProbe": http_probe("/healthz", port, period=10, failures=3, timeout=5, scheme=scheme),
        "securityContext": container_security(),
    }
    pod = {
        "metadata": {
            "labels": labels,
            "annotations": {"llmops.io/config-digest": restart_digest(config)},
        },
        "spec": {
            "securityContext": pod_security(),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            # The gateway drains (finishes its streams) on SIGTERM before it exits.
            "terminationGracePeriodSeconds": 45,
            "containers": [container],
            "volumes": volumes,
            "topologySpreadConstraints": topology_spread(selector),
        },
    }
    body = {
        "replicas": spec.gateway.replicas,
        "selector": {"matchLabels": dict(selector)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "template": pod,
    }
    return owned_object("apps/v1", "Deployment", name, owner, labels, body)


def gateway_service(owner: Manifest, spec: ModelDeploymentSpec) -> Manifest:
    """The gateway's Service: port 80 (`http`), or 443 (`https`) with spec.gateway.tls."""
    selector = child_selector(owner, "gateway")
    port = gateway_port_name(spec)
    number = 443 if port == "https" else 80
    body = {
        "type": "ClusterIP",
        "selector": dict(selector),
        "ports": [{"name": port, "port": number, "targetPort": port, "protocol": "TCP"}],
    }
    name = gateway_name(owner["metadata"]["name"])
    return owned_object(
        "v1", "Service", name, owner, child_labels("llmops-gateway", "gateway", **selector), body
    )
