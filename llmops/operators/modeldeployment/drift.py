"""The drift monitor (llmops/serving/drift.py): a Deployment that tests the prompts the gateway samples
against the reference data and exports `llmops_drift_*` for the alert. Only with
`spec.monitoring.drift.enabled`.

    Deployment                     <md>-drift            metrics on DRIFT_PORT

The samples go beside the payload samples if those are on, else into the registry
(`drift_destination`); the gateway (gateway.py) writes them there.
"""

from __future__ import annotations

from llmops.api.common import ObjectStorageLocation
from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.manifests import (
    Manifest,
    ca_bundle_mounts,
    container_security,
    credentials_env,
    http_probe,
    location_secret,
    owned_object,
    pod_security,
)
from llmops.operators.modeldeployment.names import child_labels, child_name, child_selector
from llmops.operators.modeldeployment.plan import ServingSettings

DRIFT_PORT = 9100
DRIFT_INTERVAL_SECONDS = 300


def drift_on(spec: ModelDeploymentSpec) -> bool:
    return spec.monitoring.drift is not None and spec.monitoring.drift.enabled


def drift_destination(spec: ModelDeploymentSpec) -> ObjectStorageLocation:
    """Where the gateway writes sampled prompts for the drift monitor: `monitoring.drift.prompts`, else
    drift-prompts/ beside the payload samples (a CEL rule requires one of them). Never the registry:
    the gateway faces the internet and holds no credentials of the registry."""
    drift = spec.monitoring.drift
    if drift is not None and drift.prompts is not None:
        return drift.prompts
    sampling = spec.gateway.payload_sampling
    assert sampling is not None  # the CEL rule on ModelDeploymentSpec
    return sampling.destination.child("drift-prompts")


def drift_monitor(spec: ModelDeploymentSpec, owner: Manifest, settings: ServingSettings) -> list[Manifest]:
    """The drift monitor (llmops/serving/drift.py), when `spec.monitoring.drift` is on: it tests the
    prompts the gateway samples against the reference data and exports `llmops_drift_*` for the alert."""
    drift = spec.monitoring.drift
    if drift is None or not drift.enabled:
        return []
    assert drift.reference_data is not None  # a CEL rule requires it when enabled
    md = owner["metadata"]["name"]
    selector = child_selector(owner, "drift-monitor")
    labels = child_labels("llmops-drift", "drift-monitor", **selector)
    samples = drift_destination(spec)

    def location(loc: ObjectStorageLocation) -> str:
        return loc.model_dump_json(by_alias=True, exclude_none=True)

    command = [
        "python", "-m", "llmops.serving.drift",
        "--reference", location(drift.reference_data), "--samples", location(samples),
        "--port", str(DRIFT_PORT), "--interval", str(DRIFT_INTERVAL_SECONDS),
    ]  # fmt: skip
    ca_volumes, ca_mounts = ca_bundle_mounts(drift.reference_data, samples)
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
            *credentials_env(location_secret(drift.reference_data), "REFERENCE_"),
            *credentials_env(location_secret(samples), "SAMPLES_"),
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *ca_mounts],
        # /metrics answers once the reference sample is embedded (minutes on a small CPU).
        "startupProbe": http_probe("/metrics", "metrics", period=10, failures=60),
        "livenessProbe": http_probe("/metrics", "metrics", period=30, failures=3),
        "securityContext": container_security(),
    }
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "securityContext": pod_security(),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}, *ca_volumes],
        },
    }
    body = {
        "replicas": 1,
        "selector": {"matchLabels": dict(selector)},
        "strategy": {"type": "Recreate"},  # one test at a time; nothing to keep serving
        "revisionHistoryLimit": 3,
        "template": pod,
    }
    return [owned_object("apps/v1", "Deployment", child_name(md, "drift"), owner, labels, body)]
