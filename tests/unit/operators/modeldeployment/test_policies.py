"""PodDisruptionBudgets and NetworkPolicies (llmops/operators/modeldeployment/policies.py)."""

from __future__ import annotations

from tests.unit.operators.modeldeployment.cases import (
    objects,
)


def test_network_policies_and_budgets() -> None:
    objs = objects("single")
    deny = objs[("NetworkPolicy", "support-bot-default-deny")]["spec"]
    assert deny == {
        "podSelector": {"matchLabels": {"llmops.io/modeldeployment": "support-bot"}},
        "policyTypes": ["Ingress"],
        "ingress": [],
    }
    vllm = objs[("NetworkPolicy", "support-bot-vllm")]["spec"]["ingress"][0]
    sources = vllm["from"]
    assert sources[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert sources[1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert vllm["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert objs[("PodDisruptionBudget", "support-bot-vllm")]["spec"]["maxUnavailable"] == 1
