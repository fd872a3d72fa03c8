"""Availability and isolation: PodDisruptionBudgets and NetworkPolicies.

PodDisruptionBudget            <md>-vllm, <md>-gateway               one eviction at a time
NetworkPolicy                  <md>-default-deny, <md>-vllm, <md>-gateway (and <md>-drift)
"""

from __future__ import annotations

from llmops.operators.manifests import Manifest, owned_object
from llmops.operators.modeldeployment.drift import DRIFT_PORT
from llmops.operators.modeldeployment.gateway import GATEWAY_PORT
from llmops.operators.modeldeployment.names import (
    MD_LABEL,
    child_labels,
    child_name,
    child_selector,
    gateway_name,
)
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modeldeployment.vllm import VLLM_PORT


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
        out.append(owned_object("policy/v1", "PodDisruptionBudget", name, owner, labels, body))
    return out


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
        owned_object(
            "networking.k8s.io/v1", "NetworkPolicy", name, owner, child_labels(app, "network-policy"), body
        )
        for name, app, body in policies
    ]
