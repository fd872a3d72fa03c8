"""Autoscalers of the model servers: a KEDA ScaledObject or an HPA per served version that scales.

    ScaledObject (KEDA) or HPA     <md>-<version>-vllm   on vLLM's queue and KV-cache use (Prometheus);
                                                        with scale to zero, also on the gateway's
                                                        pending requests, so a held request wakes it

A version autoscales when the spec gives it room (minReplicas < maxReplicas, or scale to zero); a
replaced ("previous") version never does. Only one autoscaler may own a Deployment: reconcile.py
deletes the other kind before applying one (EXCLUSIVE there).

With spec.suspend (every version at 0 replicas, vllm.py), neither wakes a version, and both are kept:
- the ScaledObject gets KEDA's `autoscaling.keda.sh/paused-replicas: "0"` (KEDA scales the target to 0
  and stops scaling it until the annotation goes: https://keda.sh/docs/latest/concepts/scaling-deployments/
  "Pause autoscaling"), so not even the gateway's held requests wake it;
- the HPA stays as it is: an HPA cannot hold 0 (minReplicas >= 1 without the alpha HPAScaleToZero
  gate), but a target whose replicas are 0 deactivates it (Kubernetes' "implicit maintenance-mode
  deactivation": ScalingActive=False until the target's replicas are not 0). Deleting it instead would
  lose nothing but would make resuming depend on re-creating it; pausing keeps the object as it was.
Resuming removes the annotation (and the Deployment's replicas: 0), and each autoscaler takes over.
"""

from __future__ import annotations

import copy
from typing import Any

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.manifests import Manifest, owned_object
from llmops.operators.modeldeployment.names import MODEL_LABEL, ROLE_LABEL, VERSION_LABEL, child_labels
from llmops.operators.modeldeployment.plan import Role, ServedVersion, ServingSettings


def autoscaled(spec: ModelDeploymentSpec, role: Role) -> bool:
    a = spec.autoscaling
    if role == "previous":
        return False
    return a.scale_to_zero or a.min_replicas < a.max_replicas


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


def start_replicas(spec: ModelDeploymentSpec, served: ServedVersion) -> int:
    """The replicas an autoscaled version's Deployment is created with: the count its autoscaler holds
    it at before any metric says more, so that creating the Deployment never starts a pod the
    autoscaler would stop, nor runs fewer than it asks for (the apiserver defaults a Deployment
    without `replicas` to 1; the autoscaler corrects it only at its first poll).

    - KEDA: the idle count (`idleReplicaCount`) when it has one, else `minReplicaCount` (0 when
      scaling to zero: KEDA holds a version without activity at 0);
    - HPA: `minReplicas` (at least 1: an HPA cannot hold 0).
    A suspended version's Deployment is at 0 whatever this says (vllm.py), once its autoscaler is
    paused. Source of the KEDA counts: https://keda.sh/docs/latest/reference/scaledobject-spec/."""
    low, _, idle = _replica_bounds(spec, served)
    if spec.autoscaling.engine == "hpa":
        return max(low, 1)
    return idle if idle is not None else _keda_min(spec, served, low)


# What the apiserver sets a Deployment's spec.replicas to when its manifest leaves it out:
# https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/#DeploymentSpec
DEFAULT_REPLICAS = 1


def writes_start_count(spec: ModelDeploymentSpec, served: ServedVersion) -> bool:
    """Whether an autoscaled version's Deployment is created with `replicas` in its manifest: only when
    start_replicas differs from the apiserver's DEFAULT_REPLICAS. When they are equal the manifest
    leaves `replicas` out from the start, so it is the same whether the Deployment exists or not: the
    reconcile need not look for it first (the apply's own hand-over check still reads it once, a 404
    when it is new), and once it exists its manifest does not change, so the next reconcile sends no
    hand-over read, no hand-over apply and no second apply of it."""
    return autoscaled(spec, served.role) and start_replicas(spec, served) != DEFAULT_REPLICAS


def _keda_min(spec: ModelDeploymentSpec, served: ServedVersion, low: int) -> int:
    """The ScaledObject's minReplicaCount: 0 for a stable version that scales to zero from min 0."""
    return 0 if spec.autoscaling.scale_to_zero and served.role == "stable" and low == 0 else low


def targets(spec: ModelDeploymentSpec) -> tuple[int | None, float | None]:
    """(waiting requests per replica, KV-cache use per replica 0-1) the autoscaler aims for; None for
    a signal it does not scale on. Neither set: 4 waiting requests per replica."""
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


KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"  # KEDA scales to this count and stops


def scaled_object(
    spec: ModelDeploymentSpec,
    owner: Manifest,
    served: ServedVersion,
    settings: ServingSettings,
    *,
    draining: bool = False,
) -> Manifest:
    """KEDA ScaledObject on vLLM's queue and KV-cache use; with scale to zero, also on the gateway's
    pending requests, so the first request held by the gateway wakes the version up."""
    low, high, idle = _replica_bounds(spec, served)
    queue, kv = targets(spec)
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
        "minReplicaCount": _keda_min(spec, served, low),
        "maxReplicaCount": high,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
        "triggers": triggers,
    }
    if idle is not None:
        body["idleReplicaCount"] = idle
    labels = child_labels("vllm", "autoscaler", **_version_labels(served))
    scaled = owned_object("keda.sh/v1alpha1", "ScaledObject", served.deployment, owner, labels, body)
    if spec.suspend and not draining:  # paused once the gateway has drained (plan.Plan.draining)
        scaled["metadata"]["annotations"] = {KEDA_PAUSED_REPLICAS: "0"}
    return scaled


# External metric names a metrics adapter (prometheus-adapter, or KEDA's own) must serve for engine: hpa.
HPA_QUEUE_METRIC = "llmops_vllm_num_requests_waiting"
HPA_KV_METRIC = "llmops_vllm_kv_cache_usage_perc"


def hpa(spec: ModelDeploymentSpec, owner: Manifest, served: ServedVersion) -> Manifest:
    """HPA v2 on External metrics (vLLM's queue and KV cache), selected per deployment and version."""
    low, high, _ = _replica_bounds(spec, served)
    queue, kv = targets(spec)
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
    return owned_object("autoscaling/v2", "HorizontalPodAutoscaler", served.deployment, owner, labels, body)


def _version_labels(served: ServedVersion) -> dict[str, str]:
    return {MODEL_LABEL: served.model, VERSION_LABEL: served.version, ROLE_LABEL: served.role}
