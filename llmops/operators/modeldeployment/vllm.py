"""The model servers: one vLLM Deployment and one headless Service per served version.

    Deployment + headless Service  <md>-<version>-vllm   an init container fetches the version (and
                                                        its LoRA adapters) from the registry into an
                                                        emptyDir, then vLLM serves it on VLLM_PORT

A version that autoscales (autoscaling.autoscaled) leaves `replicas` to its autoscaler, except when
its Deployment is created (not in `Plan.existing`) at a count other than the apiserver's default of 1
(autoscaling.writes_start_count): then it starts at the count the autoscaler would hold it at
(autoscaling.start_replicas), and the next apply hands that count over as it is (operators/apply.py
HANDOVER_FIELDS). A start count of 1 is the default's: left out from the start. The others get a fixed count:
the stable version's from the spec, a canary's from the plan. With spec.suspend every
version gets 0 (its autoscaler is paused: autoscaling.py); resuming writes the fixed count again, or,
for one that autoscales, its floor once (`resuming`), from which its autoscaler takes over.
"""

from __future__ import annotations

from typing import Any

from llmops import engine
from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.manifests import (
    Manifest,
    ca_bundle_mounts,
    container_security,
    credentials_env,
    http_probe,
    location_secret,
    node_placement,
    owned_object,
    pod_security,
    requests_limits,
    resource_amounts,
    topology_spread,
)
from llmops.operators.modeldeployment.autoscaling import autoscaled, start_replicas, writes_start_count
from llmops.operators.modeldeployment.names import (
    MODEL_LABEL,
    ROLE_LABEL,
    VERSION_LABEL,
    child_labels,
    child_selector,
)
from llmops.operators.modeldeployment.plan import Adapter, ServedVersion, ServingSettings, stable_replicas

VLLM_PORT = engine.VLLM_PORT
VLLM_PRESTOP_SECONDS = 15  # > the gateway's DNS refresh (5 s) and health check (2 s) periods


def _fixed_replicas(spec: ModelDeploymentSpec, served: ServedVersion) -> int:
    return (served.replicas or 1) if served.role == "canary" else stable_replicas(spec)


def vllm_deployment(
    spec: ModelDeploymentSpec,
    owner: Manifest,
    served: ServedVersion,
    adapters: tuple[Adapter, ...],
    settings: ServingSettings,
    *,
    resuming: bool = False,
    draining: bool = False,
    exists: bool = False,
) -> Manifest:
    """vLLM serving one version: an init container fetches the weights, then vLLM serves them.

    Replicas: 0 with spec.suspend (once the gateway has drained: `draining`, plan.Plan, keeps them as
    they are until then); a fixed count when the version does not autoscale; else left to the
    autoscaler, except when `resuming` (plan.Plan): then the autoscaler's floor, once; and when the
    Deployment does not exist yet (`exists` False): then the count its autoscaler starts from, if
    the apiserver's default would not give it (autoscaling.writes_start_count)."""
    selector = child_selector(
        owner, "model-server", **{MODEL_LABEL: served.model, VERSION_LABEL: served.version}
    )
    labels = child_labels("vllm", "model-server", **selector)
    res = spec.resources

    items = [engine.FetchItem("model", served.model, served.version)]
    # An adapter's own files only (a lora version also holds the merged model, not needed here).
    items += [engine.FetchItem(f"adapters/{a.name}", a.model, a.version, a.path) for a in adapters]
    argv = engine.vllm_argv(
        spec.engine,
        model_path=engine.model_dir(),
        served_model_name=spec.engine.served_model_name or spec.model.name,
        port=VLLM_PORT,
        adapter_paths={a.name: a.folder() for a in adapters},
        quantization=served.quantization,
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
        # The one pod of ours outside the `restricted` (and `baseline`) Pod Security Standard: both
        # refuse hostPath volumes, so a namespace that enforces either gets no pod of such a
        # ModelDeployment (FailedCreate on its ReplicaSet). Serve from an S3 registry there.
        volumes.append(
            {"name": "registry", "hostPath": {"path": spec.registry.local.path, "type": "Directory"}}
        )
        fetch_mounts.append({"name": "registry", "mountPath": spec.registry.local.path, "readOnly": True})
    ca_volumes, ca_mounts = ca_bundle_mounts(spec.registry)
    volumes += ca_volumes
    fetch_mounts += ca_mounts
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
        "env": [{"name": "HOME", "value": "/tmp"}, *credentials_env(location_secret(spec.registry))],
        "volumeMounts": fetch_mounts,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": container_security(),
    }
    server = {
        "name": "vllm",
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": argv,
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "env": cache_env,
        "resources": requests_limits(resource_amounts(res)),
        "volumeMounts": [
            {"name": "models", "mountPath": engine.MODEL_ROOT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
        # Loading weights and compiling take minutes: the startup probe allows 30 of them.
        # The gateways re-resolve the version's Service every few seconds: keep serving until they have
        # dropped this pod, so SIGTERM finds no new requests on their way here.
        "lifecycle": {"preStop": {"sleep": {"seconds": VLLM_PRESTOP_SECONDS}}},
        "startupProbe": http_probe("/health", "http", period=10, failures=180),
        "readinessProbe": http_probe("/health", "http", period=5, failures=3),
        "livenessProbe": http_probe("/health", "http", period=15, failures=4, timeout=10),
        "securityContext": container_security(),
    }
    pod: dict[str, Any] = {
        "securityContext": pod_security(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "initContainers": [fetch],
        "containers": [server],
        "volumes": volumes,
        "topologySpreadConstraints": topology_spread(selector),
    }
    pod.update(node_placement(res))
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(selector)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": 1800,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if spec.suspend and not draining:
        deployment_spec = {"replicas": 0, **deployment_spec}
    elif not autoscaled(spec, served.role) or resuming:
        deployment_spec = {"replicas": _fixed_replicas(spec, served), **deployment_spec}
    elif not exists and writes_start_count(spec, served):
        deployment_spec = {"replicas": start_replicas(spec, served), **deployment_spec}
    meta_labels = {**labels, ROLE_LABEL: served.role}
    return owned_object("apps/v1", "Deployment", served.deployment, owner, meta_labels, deployment_spec)


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
    return owned_object(
        "v1", "Service", served.deployment, owner, child_labels("vllm", "model-server", **selector), spec
    )
