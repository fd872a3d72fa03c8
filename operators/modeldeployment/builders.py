"""Pure builders: a ModelDeployment's spec and plan in, the child manifests out.

Nothing here talks to the cluster or the registry: the reconcile resolves versions and decides
weights (the `Plan`), these functions render it. Golden files in tests/unit/golden/modeldeployment/
hold their output for every example.

Children of ModelDeployment `<md>` (names are deterministic; see `names`):

    Deployment + headless Service  <md>-<version>-vllm     one per served version (stable, canary,
                                                          and a replaced version until its successor is ready)
    ScaledObject (KEDA) or HPA     <md>-<version>-vllm     one per served version that autoscales
    ConfigMap                      <md>-gateway            the gateway's config.json (llmops.gateway_config)
    Deployment + Service           <md>-gateway            the gateway; Service port 80 -> 8000
    PodDisruptionBudget            <md>-vllm, <md>-gateway
    NetworkPolicy                  <md>-default-deny, <md>-vllm, <md>-gateway
    PodMonitor / ServiceMonitor    <md>-vllm / <md>-gateway   with spec.monitoring.serviceMonitor
    ConfigMap                      <md>-dashboard          Grafana dashboard, same condition
    PrometheusRule                 <md>-slo                with spec.monitoring.alerts
"""

from __future__ import annotations

import copy
import json
from typing import Any

from llmops import engine
from llmops.api.common import ObjectStorageLocation, SecretKeysRef
from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.gateway_config import (
    API_KEYS_MOUNT,
    Sampling,
    ServiceEndpoints,
    UpstreamGroup,
    gateway_config_for,
)
from operators.apply import adopt
from operators.modeldeployment import monitoring
from operators.modeldeployment.names import (
    MD_LABEL,
    MODEL_LABEL,
    ROLE_LABEL,
    VERSION_LABEL,
    child_labels,
    child_name,
    child_selector,
    digest,
    gateway_name,
)
from operators.modeldeployment.plan import (
    Adapter,
    Plan,
    Role,
    ServedVersion,
    ServingSettings,
    stable_replicas,
)

Manifest = dict[str, Any]

VLLM_PORT = engine.VLLM_PORT
GATEWAY_PORT = 8000
GATEWAY_CONFIG_DIR = "/etc/llmops/gateway"
DRIFT_PORT = 9100
DRIFT_INTERVAL_SECONDS = 300
NON_ROOT_UID = 65532  # the user our images run as (images/serving/Dockerfile)
GATEWAY_PRESTOP_SECONDS = 5
VLLM_PRESTOP_SECONDS = 15  # > the gateway's DNS refresh (5 s) and health check (2 s) periods


# -- shared pieces -----------------------------------------------------------------------------


def _object(
    api_version: str, kind: str, name: str, owner: Manifest, labels: dict, spec: Any, **top: Any
) -> Manifest:
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": labels}}
    if spec is not None:
        body["spec"] = spec
    body.update(top)
    return adopt(body, owner)


def _security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _credentials_env(ref: SecretKeysRef | None, prefix: str = "") -> list[dict]:
    """AWS_* (or PREFIX_AWS_*) from the Secret by reference: values never pass through the operator."""
    if ref is None:
        return []
    return [
        {
            "name": f"{prefix}AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_id_key}},
        },
        {
            "name": f"{prefix}AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_access_key_key}},
        },
    ]


def _location_secret(location: ObjectStorageLocation | None) -> SecretKeysRef | None:
    return location.s3.credentials_secret_ref if location and location.s3 else None


def _http_probe(path: str, port: str, period: int, failures: int, timeout: int = 5) -> dict:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _spread(selector: dict[str, str]) -> list[dict]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
    ]


def _autoscaled(spec: ModelDeploymentSpec, role: Role) -> bool:
    a = spec.autoscaling
    if role == "previous":
        return False
    return a.scale_to_zero or a.min_replicas < a.max_replicas


def _fixed_replicas(spec: ModelDeploymentSpec, served: ServedVersion) -> int:
    return (served.replicas or 1) if served.role == "canary" else stable_replicas(spec)


# -- vLLM --------------------------------------------------------------------------------------


def vllm_deployment(
    spec: ModelDeploymentSpec,
    owner: Manifest,
    served: ServedVersion,
    adapters: tuple[Adapter, ...],
    settings: ServingSettings,
) -> Manifest:
    """vLLM serving one version: an init container fetches the weights, then vLLM serves them."""
    selector = child_selector(
        owner, "model-server", **{MODEL_LABEL: served.model, VERSION_LABEL: served.version}
    )
    labels = child_labels("vllm", "model-server", **selector)
    res = spec.resources
    limits: dict[str, Any] = {}
    if res.cpu is not None:
        limits["cpu"] = res.cpu
    if res.memory is not None:
        limits["memory"] = res.memory
    if res.gpus:
        limits["nvidia.com/gpu"] = res.gpus
    node_selector = dict(res.node_selector)
    if res.gpu_type:
        node_selector["nvidia.com/gpu.product"] = res.gpu_type
    tolerations = [t.to_dict() for t in res.tolerations]
    if res.gpus:
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})

    items = [engine.FetchItem("model", served.model, served.version)]
    # An adapter's own files only (a lora version also holds the merged model, not needed here).
    items += [engine.FetchItem(f"adapters/{a.name}", a.model, a.version, a.path) for a in adapters]
    argv = engine.vllm_argv(
        spec.engine,
        model_path=engine.model_dir(),
        served_model_name=spec.engine.served_model_name or spec.model.name,
        port=VLLM_PORT,
        adapter_paths={a.name: a.folder() for a in adapters},
    )
    volumes: list[dict] = [
        {"name": "models", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        # NCCL and PyTorch workers exchange tensors through /dev/shm; the default 64 MiB is too small.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi" if res.gpus else "1Gi"}},
    ]
    fetch_mounts = [{"name": "models", "mountPath": engine.MODEL_ROOT}, {"name": "tmp", "mountPath": "/tmp"}]
    if spec.registry.local:
        # A development registry on a node directory or shared filesystem, read-only at the same path.
        volumes.append(
            {"name": "registry", "hostPath": {"path": spec.registry.local.path, "type": "Directory"}}
        )
        fetch_mounts.append({"name": "registry", "mountPath": spec.registry.local.path, "readOnly": True})
    cache_env = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "VLLM_CACHE_ROOT", "value": "/tmp/vllm"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    fetch = {
        "name": "fetch-model",
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": engine.fetch_argv(spec.registry, items),
        "env": [{"name": "HOME", "value": "/tmp"}, *_credentials_env(_location_secret(spec.registry))],
        "volumeMounts": fetch_mounts,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": _security_context(),
    }
    server = {
        "name": "vllm",
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": argv,
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "env": cache_env,
        "resources": {"requests": dict(limits), "limits": dict(limits)} if limits else {},
        "volumeMounts": [
            {"name": "models", "mountPath": engine.MODEL_ROOT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
        # Loading weights and compiling take minutes: the startup probe allows 30 of them.
        # The gateways re-resolve the version's Service every few seconds: keep serving until they have
        # dropped this pod, so SIGTERM finds no new requests on their way here.
        "lifecycle": {"preStop": {"sleep": {"seconds": VLLM_PRESTOP_SECONDS}}},
        "startupProbe": _http_probe("/health", "http", period=10, failures=180),
        "readinessProbe": _http_probe("/health", "http", period=5, failures=3),
        "livenessProbe": _http_probe("/health", "http", period=15, failures=4, timeout=10),
        "securityContext": _security_context(),
    }
    pod: dict[str, Any] = {
        "securityContext": _pod_security_context(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "initContainers": [fetch],
        "containers": [server],
        "volumes": volumes,
        "topologySpreadConstraints": _spread(selector),
    }
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(selector)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": 1800,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if not _autoscaled(spec, served.role):
        deployment_spec = {"replicas": _fixed_replicas(spec, served), **deployment_spec}
    meta_labels = {**labels, ROLE_LABEL: served.role}
    return _object("apps/v1", "Deployment", served.deployment, owner, meta_labels, deployment_spec)


def vllm_service(owner: Manifest, served: ServedVersion) -> Manifest:
    """Headless: the gateway resolves it to the ready pods and balances over them itself."""
    selector = child_selector(
        owner, "model-server", **{MODEL_LABEL: served.model, VERSION_LABEL: served.version}
    )
    spec = {
        "clusterIP": "None",
        "selector": dict(selector),
        "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    return _object(
        "v1", "Service", served.deployment, owner, child_labels("vllm", "model-server", **selector), spec
    )


# -- autoscaling -------------------------------------------------------------------------------


def _prom_selector(owner: Manifest, **extra: str) -> str:
    labels = {
        "namespace": owner["metadata"]["namespace"],
        "model_deployment": owner["metadata"]["name"],
        **extra,
    }
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def scaler_queries(owner: Manifest, served: ServedVersion) -> dict[str, str]:
    """PromQL per signal, summed over the version's replicas (KEDA divides by the replica count)."""
    sel = _prom_selector(owner, version=served.version)
    return {
        "queue": f"sum(vllm:num_requests_waiting{sel})",
        # vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc; take whichever the image exports.
        "kvCache": f"sum(vllm:kv_cache_usage_perc{sel}) or sum(vllm:gpu_cache_usage_perc{sel})",
        "pending": f"sum(llmops_gateway_pending_requests{_prom_selector(owner)})",
    }


def _replica_bounds(spec: ModelDeploymentSpec, served: ServedVersion) -> tuple[int, int, int | None]:
    """(min, max, idle): a canary keeps one replica up so it can be judged (more before it takes all)."""
    a = spec.autoscaling
    role = served.role
    if role == "canary":
        return min(served.replicas or 1, a.max_replicas), a.max_replicas, None
    if a.scale_to_zero and a.min_replicas > 0:
        return a.min_replicas, a.max_replicas, 0  # KEDA: idle at 0, at least min while active
    return a.min_replicas, a.max_replicas, None


def _targets(spec: ModelDeploymentSpec) -> tuple[int | None, float | None]:
    a = spec.autoscaling
    queue, kv = a.target_queue_depth, a.target_kv_cache_usage
    if queue is None and kv is None:
        queue = 4  # nothing chosen: scale on vLLM's queue, 4 waiting requests per replica
    return queue, kv


def _behavior(spec: ModelDeploymentSpec) -> dict:
    return {
        "scaleDown": {
            "stabilizationWindowSeconds": spec.autoscaling.stabilization_window_seconds,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 30}],
        },
    }


def scaled_object(
    spec: ModelDeploymentSpec, owner: Manifest, served: ServedVersion, settings: ServingSettings
) -> Manifest:
    """KEDA ScaledObject on vLLM's queue and KV-cache use; with scale to zero, also on the gateway's
    pending requests, so the first request held by the gateway wakes the version up."""
    low, high, idle = _replica_bounds(spec, served)
    queue, kv = _targets(spec)
    queries = scaler_queries(owner, served)

    def trigger(name: str, threshold: float | int) -> dict:
        return {
            "type": "prometheus",
            "name": name,
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": settings.prometheus_url,
                "query": queries[name],
                "threshold": f"{threshold:g}",
                "activationThreshold": "0",
                "ignoreNullValues": "true",
            },
        }

    triggers = []
    if queue is not None:
        triggers.append(trigger("queue", queue))
    if kv is not None:
        triggers.append(trigger("kvCache", kv))
    if spec.autoscaling.scale_to_zero and served.role == "stable":
        triggers.append(trigger("pending", 1))
    body: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": served.deployment},
        "pollingInterval": 15,
        # Idle this long before scaling to zero (the same window as scaling down).
        "cooldownPeriod": spec.autoscaling.stabilization_window_seconds,
        "minReplicaCount": 0
        if spec.autoscaling.scale_to_zero and served.role == "stable" and low == 0
        else low,
        "maxReplicaCount": high,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
        "triggers": triggers,
    }
    if idle is not None:
        body["idleReplicaCount"] = idle
    labels = child_labels("vllm", "autoscaler", **_version_labels(served))
    return _object("keda.sh/v1alpha1", "ScaledObject", served.deployment, owner, labels, body)


# External metric names a metrics adapter (prometheus-adapter, or KEDA's own) must serve for engine: hpa.
HPA_QUEUE_METRIC = "llmops_vllm_num_requests_waiting"
HPA_KV_METRIC = "llmops_vllm_kv_cache_usage_perc"


def hpa(spec: ModelDeploymentSpec, owner: Manifest, served: ServedVersion) -> Manifest:
    """HPA v2 on External metrics (vLLM's queue and KV cache), selected per deployment and version."""
    low, high, _ = _replica_bounds(spec, served)
    queue, kv = _targets(spec)
    selector = {"matchLabels": {"model_deployment": owner["metadata"]["name"], "version": served.version}}
    metrics = []
    if queue is not None:
        metrics.append(
            {
                "type": "External",
                "external": {
                    "metric": {"name": HPA_QUEUE_METRIC, "selector": copy.deepcopy(selector)},
                    "target": {"type": "AverageValue", "averageValue": str(queue)},
                },
            }
        )
    if kv is not None:
        metrics.append(
            {
                "type": "External",
                "external": {
                    "metric": {"name": HPA_KV_METRIC, "selector": copy.deepcopy(selector)},
                    "target": {"type": "AverageValue", "averageValue": f"{round(kv * 1000)}m"},
                },
            }
        )
    body = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": served.deployment},
        "minReplicas": max(low, 1),
        "maxReplicas": high,
        "metrics": metrics,
        "behavior": _behavior(spec),
    }
    labels = child_labels("vllm", "autoscaler", **_version_labels(served))
    return _object("autoscaling/v2", "HorizontalPodAutoscaler", served.deployment, owner, labels, body)


def _version_labels(served: ServedVersion) -> dict[str, str]:
    return {MODEL_LABEL: served.model, VERSION_LABEL: served.version, ROLE_LABEL: served.role}


# -- the gateway -------------------------------------------------------------------------------


def gateway_config(spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings):
    """The gateway's GatewayConfig: one upstream group per served version, weights from the plan."""
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
    if _drift_on(spec):
        assert spec.monitoring.drift is not None
        drift_sampling = Sampling(
            rate=spec.monitoring.drift.sample_rate, destination=drift_destination(spec, owner)
        )
    return gateway_config_for(
        spec.gateway,
        served_model_name=spec.engine.served_model_name or spec.model.name,
        upstreams=upstreams,
        extra_model_names=[a.name for a in spec.engine.lora_adapters],
        scale_to_zero=spec.autoscaling.scale_to_zero,
        hold_seconds=min(settings.scale_to_zero_hold_seconds, spec.gateway.queue_timeout_seconds * 10),
        drift_sampling=drift_sampling,
    )


def _drift_on(spec: ModelDeploymentSpec) -> bool:
    return spec.monitoring.drift is not None and spec.monitoring.drift.enabled


def drift_destination(spec: ModelDeploymentSpec, owner: Manifest) -> ObjectStorageLocation:
    """Where the gateway writes sampled prompts for the drift monitor: beside the payload samples
    if they are on, else in the registry under monitoring/<namespace>/<name>/prompts."""
    meta = owner["metadata"]
    sampling = spec.gateway.payload_sampling
    base, suffix = (
        (sampling.destination, "drift-prompts")
        if sampling
        else (spec.registry, f"monitoring/{meta['namespace']}/{meta['name']}/prompts")
    )
    if base.local:
        return ObjectStorageLocation.model_validate(
            {"local": {"path": f"{base.local.path.rstrip('/')}/{suffix}"}}
        )
    assert base.s3 is not None
    prefix = f"{base.s3.prefix.rstrip('/')}/{suffix}" if base.s3.prefix else suffix
    return base.model_copy(update={"s3": base.s3.model_copy(update={"prefix": prefix})})


def _gateway_secret(spec: ModelDeploymentSpec) -> SecretKeysRef | None:
    """The one S3 credential the gateway gets: that of the payload samples, else of the registry
    (when the drift prompts go there)."""
    sampling = spec.gateway.payload_sampling
    if sampling:
        return _location_secret(sampling.destination)
    if _drift_on(spec):
        return _location_secret(spec.registry)
    return None


def gateway_configmap(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> Manifest:
    config = gateway_config(spec, owner, plan, settings)
    labels = child_labels("llmops-gateway", "gateway")
    return _object(
        "v1", "ConfigMap", gateway_name(owner["metadata"]["name"]), owner, labels, None,
        data={"config.json": config.dumps()},
    )  # fmt: skip


def _restartdigest(spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings) -> str:
    """A hash of the config fields the gateway reads only at start; upstreams and weights reload live."""
    config = gateway_config(spec, owner, plan, settings).to_dict()
    config.pop("upstreams", None)
    return digest(json.dumps(config, sort_keys=True), 16)


def gateway_argv() -> list[str]:
    config = f"{GATEWAY_CONFIG_DIR}/config.json"
    return ["python", "-m", "serving.gateway", "--config", config, "--port", str(GATEWAY_PORT)]


def gateway_deployment(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> Manifest:
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
    if spec.gateway.api_keys_secret_ref:
        volumes.append({"name": "api-keys", "secret": {"secretName": spec.gateway.api_keys_secret_ref.name}})
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_MOUNT, "readOnly": True})
    container = {
        "name": "gateway",
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": gateway_argv(),
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *_credentials_env(_gateway_secret(spec)),
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": mounts,
        # Endpoints and kube-proxy drop a terminating pod a moment later: serve until then, then drain.
        "lifecycle": {"preStop": {"sleep": {"seconds": GATEWAY_PRESTOP_SECONDS}}},
        "readinessProbe": _http_probe("/readyz", "http", period=5, failures=2, timeout=2),
        "livenessProbe": _http_probe("/healthz", "http", period=10, failures=3, timeout=5),
        "securityContext": _security_context(),
    }
    pod = {
        "metadata": {
            "labels": labels,
            "annotations": {"llmops.io/config-digest": _restartdigest(spec, owner, plan, settings)},
        },
        "spec": {
            "securityContext": _pod_security_context(),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            # The gateway drains (finishes its streams) on SIGTERM before it exits.
            "terminationGracePeriodSeconds": 45,
            "containers": [container],
            "volumes": volumes,
            "topologySpreadConstraints": _spread(selector),
        },
    }
    body = {
        "replicas": spec.gateway.replicas,
        "selector": {"matchLabels": dict(selector)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "template": pod,
    }
    return _object("apps/v1", "Deployment", name, owner, labels, body)


def gateway_service(owner: Manifest) -> Manifest:
    selector = child_selector(owner, "gateway")
    body = {
        "type": "ClusterIP",
        "selector": dict(selector),
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    name = gateway_name(owner["metadata"]["name"])
    return _object("v1", "Service", name, owner, child_labels("llmops-gateway", "gateway", **selector), body)


# -- availability and isolation ----------------------------------------------------------------


def disruption_budgets(owner: Manifest) -> list[Manifest]:
    """One replica at a time may be evicted, of the model servers and of the gateway."""
    md = owner["metadata"]["name"]
    out = []
    for component, name, app in (
        ("model-server", child_name(md, "vllm"), "vllm"),
        ("gateway", gateway_name(md), "llmops-gateway"),
    ):
        body = {"maxUnavailable": 1, "selector": {"matchLabels": child_selector(owner, component)}}
        labels = child_labels(app, component)
        out.append(_object("policy/v1", "PodDisruptionBudget", name, owner, labels, body))
    return out


def drift_monitor(spec: ModelDeploymentSpec, owner: Manifest, settings: ServingSettings) -> list[Manifest]:
    """The drift monitor (serving/drift.py), when `spec.monitoring.drift` is on: it tests the prompts the
    gateway samples against the reference data and exports `llmops_drift_*` for the alert."""
    drift = spec.monitoring.drift
    if drift is None or not drift.enabled:
        return []
    assert drift.reference_data is not None  # a CEL rule requires it when enabled
    md = owner["metadata"]["name"]
    selector = child_selector(owner, "drift-monitor")
    labels = child_labels("llmops-drift", "drift-monitor", **selector)
    samples = drift_destination(spec, owner)

    def location(loc: ObjectStorageLocation) -> str:
        return loc.model_dump_json(by_alias=True, exclude_none=True)

    command = [
        "python", "-m", "serving.drift",
        "--reference", location(drift.reference_data), "--samples", location(samples),
        "--port", str(DRIFT_PORT), "--interval", str(DRIFT_INTERVAL_SECONDS),
    ]  # fmt: skip
    container = {
        "name": "drift",
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "ports": [{"name": "metrics", "containerPort": DRIFT_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/tmp/huggingface"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},  # the embedding model ships in the image
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # Each location with its own Secret: the reference data and the samples may differ.
            *_credentials_env(_location_secret(drift.reference_data), "REFERENCE_"),
            *_credentials_env(_location_secret(samples), "SAMPLES_"),
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        # /metrics answers once the reference sample is embedded (minutes on a small CPU).
        "startupProbe": _http_probe("/metrics", "metrics", period=10, failures=60),
        "livenessProbe": _http_probe("/metrics", "metrics", period=30, failures=3),
        "securityContext": _security_context(),
    }
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "securityContext": _pod_security_context(),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }
    body = {
        "replicas": 1,
        "selector": {"matchLabels": dict(selector)},
        "strategy": {"type": "Recreate"},  # one test at a time; nothing to keep serving
        "revisionHistoryLimit": 3,
        "template": pod,
    }
    return [_object("apps/v1", "Deployment", child_name(md, "drift"), owner, labels, body)]


def network_policies(owner: Manifest, settings: ServingSettings, drift: bool = False) -> list[Manifest]:
    """Default deny for every pod of the deployment; then: clients -> gateway, gateway -> vLLM,
    Prometheus (namespaces labelled as configured) -> both, and the drift monitor, for metrics."""
    md = owner["metadata"]["name"]
    prometheus = {"namespaceSelector": {"matchLabels": dict(settings.prometheus_namespace_labels)}}
    gateway_pods = {"podSelector": {"matchLabels": child_selector(owner, "gateway")}}

    def port(number: int) -> list[dict]:
        return [{"protocol": "TCP", "port": number}]

    deny = {"podSelector": {"matchLabels": {MD_LABEL: md}}, "policyTypes": ["Ingress"], "ingress": []}
    vllm = {
        "podSelector": {"matchLabels": child_selector(owner, "model-server")},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [gateway_pods, prometheus], "ports": port(VLLM_PORT)}],
    }
    gateway = {
        "podSelector": {"matchLabels": child_selector(owner, "gateway")},
        "policyTypes": ["Ingress"],
        # Clients come from anywhere in the cluster; /metrics shares the port, Prometheus included.
        "ingress": [{"ports": port(GATEWAY_PORT)}],
    }
    policies = [
        (child_name(md, "default-deny"), "llmops", deny),
        (child_name(md, "vllm"), "vllm", vllm),
        (gateway_name(md), "llmops-gateway", gateway),
    ]
    if drift:
        monitor = {
            "podSelector": {"matchLabels": child_selector(owner, "drift-monitor")},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [prometheus], "ports": port(DRIFT_PORT)}],
        }
        policies.append((child_name(md, "drift"), "llmops-drift", monitor))
    return [
        _object(
            "networking.k8s.io/v1", "NetworkPolicy", name, owner, child_labels(app, "network-policy"), body
        )
        for name, app, body in policies
    ]


# -- everything --------------------------------------------------------------------------------


def version_children(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> list[Manifest]:
    """The per-version Deployments and Services (their status decides the weights).

    A version being replaced ("previous") is left as it is, untouched by spec changes, until its
    successor is ready; only its upstream stays in the gateway's config meanwhile.
    """
    out = []
    for served in plan.versions:
        if served.role != "previous":
            out.append(vllm_deployment(spec, owner, served, plan.adapters, settings))
            out.append(vllm_service(owner, served))
    return out


def shared_children(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> list[Manifest]:
    """Everything else: autoscalers, the gateway, budgets, policies, monitoring."""
    out = []
    for served in plan.versions:
        if _autoscaled(spec, served.role):
            if spec.autoscaling.engine == "keda":
                out.append(scaled_object(spec, owner, served, settings))
            else:
                out.append(hpa(spec, owner, served))
    out += [
        gateway_configmap(spec, owner, plan, settings),
        gateway_deployment(spec, owner, plan, settings),
        gateway_service(owner),
        *disruption_budgets(owner),
        *drift_monitor(spec, owner, settings),
        *network_policies(owner, settings, drift=_drift_on(spec)),
        *monitoring.children(spec, owner, settings),
    ]
    return out


def build(
    spec: ModelDeploymentSpec, owner: Manifest, plan: Plan, settings: ServingSettings
) -> list[Manifest]:
    """Every child of the ModelDeployment for this plan."""
    return [*version_children(spec, owner, plan, settings), *shared_children(spec, owner, plan, settings)]


# Kinds of which one workload may have only one: KEDA's admission webhook refuses a ScaledObject for a
# Deployment that an HPA already scales (https://keda.sh/docs/latest/concepts/admission-webhooks/), and
# two HPAs on one Deployment fight. A child of one of these kinds replaces another of the same name
# only once that one is gone.
EXCLUSIVE = {"HorizontalPodAutoscaler": "autoscaler", "ScaledObject": "autoscaler"}


def exclusive_slot(entry: str) -> tuple[str, str] | None:
    """(slot, name) of an inventory entry that must be alone in its slot (see EXCLUSIVE), else None."""
    _, kind, name = parse_ref(entry)
    slot = EXCLUSIVE.get(kind)
    return (slot, name) if slot else None


def ref(manifest: Manifest) -> str:
    """apiVersion/kind/name: a child's inventory entry."""
    return f"{manifest['apiVersion']}/{manifest['kind']}/{manifest['metadata']['name']}"


def parse_ref(entry: str) -> tuple[str, str, str]:
    api_version, kind, name = entry.rsplit("/", 2)
    return api_version, kind, name
