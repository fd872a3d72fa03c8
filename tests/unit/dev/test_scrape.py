"""The dev Prometheus scrapes what the operator's monitors select, with their labels.

The children come from the operator's own builders for the quickstart ModelDeployment; the
targets come from `llmops.dev.scrape`, as `llmops dev serve` computes them. The check that
matters: the series carry every label the product's autoscaler queries select on.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.dev.scrape import local_pod, relabel, scrape_groups
from llmops.operators.modeldeployment.autoscaling import scaler_queries
from llmops.operators.modeldeployment.builders import build
from llmops.operators.modeldeployment.names import vllm_name
from llmops.operators.modeldeployment.plan import Plan, ServedVersion, ServingSettings

ROOT = Path(__file__).parents[3]
OWNER = {
    "apiVersion": "llmops.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {
        "name": "quickstart",
        "namespace": "quickstart",
        "uid": "00000000-0000-4000-8000-000000000000",
    },
}


def quickstart() -> tuple[ModelDeploymentSpec, Plan, list[dict]]:
    text = (ROOT / "examples" / "quickstart" / "modeldeployment.yaml").read_text()
    text = text.replace("${S3_ENDPOINT}", "http://minio:9000").replace("${MODEL_VERSION}", "1")
    spec = ModelDeploymentSpec.model_validate(yaml.safe_load(text)["spec"])
    served = ServedVersion(
        "support-tiny", "1", "stable", 100, vllm_name("quickstart", "support-tiny", "1", "support-tiny")
    )
    plan = Plan((served,))
    children = build(spec, OWNER, plan, ServingSettings())
    for child in children:  # as read back from the API server
        child["metadata"].setdefault("namespace", "quickstart")
    return spec, plan, children


def _matchers(query: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', query))


def test_quickstart_targets_carry_what_the_autoscaler_selects() -> None:
    _, plan, children = quickstart()
    deployments = {c["metadata"]["name"]: c for c in children if c["kind"] == "Deployment"}
    vllm = deployments[plan.versions[0].deployment]
    gateway = next(d for n, d in deployments.items() if n.endswith("-gateway"))
    pods = [
        local_pod("quickstart", vllm, "vllm", "127.0.0.1:1001"),
        local_pod("quickstart", gateway, "gateway", "127.0.0.1:1002"),
    ]
    monitors = [c for c in children if c["kind"] in ("PodMonitor", "ServiceMonitor")]
    services = [c for c in children if c["kind"] == "Service"]
    groups = scrape_groups(monitors, services, pods)

    by_target = {g["targets"][0]: g["labels"] for g in groups}
    assert set(by_target) == {"127.0.0.1:1001", "127.0.0.1:1002"}, groups
    vllm_labels, gateway_labels = by_target["127.0.0.1:1001"], by_target["127.0.0.1:1002"]
    assert vllm_labels["job"] == "quickstart/quickstart-vllm"
    assert vllm_labels["__metrics_path__"] == "/metrics"
    assert gateway_labels["service"] == "quickstart-gateway"
    assert not any(k.startswith("__meta_") for g in groups for k in g["labels"])

    queries = scaler_queries(OWNER, plan.versions[0])
    for signal in ("queue", "kvCache"):
        wanted = _matchers(queries[signal])
        assert wanted and wanted.items() <= vllm_labels.items(), (signal, wanted, vllm_labels)
    wanted = _matchers(queries["pending"])
    assert wanted.items() <= gateway_labels.items(), (wanted, gateway_labels)


def test_without_monitors_nothing_is_scraped() -> None:
    _, plan, children = quickstart()
    vllm = next(c for c in children if c["metadata"]["name"] == plan.versions[0].deployment)
    services = [c for c in children if c["kind"] == "Service"]
    assert scrape_groups([], services, [local_pod("quickstart", vllm, "vllm", "127.0.0.1:1001")]) == []


def test_relabel_follows_prometheus_defaults() -> None:
    labels = {"__meta_kubernetes_pod_label_app": "vllm", "a": "x"}
    assert (
        relabel(labels, [{"sourceLabels": ["__meta_kubernetes_pod_label_app"], "targetLabel": "app"}])["app"]
        == "vllm"
    )
    rule = {
        "sourceLabels": ["a", "__meta_kubernetes_pod_label_app"],
        "regex": "x;(v.*)",
        "replacement": "got-$1",
        "targetLabel": "b",
    }
    assert relabel(labels, [rule])["b"] == "got-vllm"
    assert relabel(labels, [{"action": "keep", "sourceLabels": ["a"], "regex": "y"}]) is None
    assert relabel(labels, [{"action": "drop", "sourceLabels": ["a"], "regex": "x"}]) is None
    assert relabel(labels, [{"action": "keep", "sourceLabels": ["a"], "regex": "x|y"}]) == labels


def test_the_drift_monitor_is_scraped_with_what_the_drift_trigger_selects() -> None:
    """`llmops dev serve` runs the drift monitor (run_drift) and scrapes it through its PodMonitor:
    the series carry the labels the RetrainPolicy's drift query and the drift alert select on."""
    from llmops.operators.retrainpolicy.triggers import drift_query

    spec, plan, _ = quickstart()
    reference = {"s3": {"endpoint": "http://minio:9000", "bucket": "llmops", "prefix": "datasets/"}}
    data = spec.to_dict()
    data.setdefault("monitoring", {})["drift"] = {"referenceData": reference, "prompts": reference}
    spec = ModelDeploymentSpec.model_validate(data)
    children = build(spec, OWNER, plan, ServingSettings())
    for child in children:
        child["metadata"].setdefault("namespace", "quickstart")
    drift = next(
        c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("-drift")
    )
    monitors = [c for c in children if c["kind"] in ("PodMonitor", "ServiceMonitor")]
    services = [c for c in children if c["kind"] == "Service"]
    groups = scrape_groups(monitors, services, [local_pod("quickstart", drift, "drift", "127.0.0.1:1003")])

    (group,) = groups
    assert group["targets"] == ["127.0.0.1:1003"]
    wanted = _matchers(drift_query("quickstart", "quickstart"))
    assert wanted and wanted.items() <= group["labels"].items(), (wanted, group["labels"])
