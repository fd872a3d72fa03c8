"""Which ModelDeployments follow aliases (llmops/operators/modeldeployment/reconcile.py `aliased`): those
are reconciled at least every `alias_poll_seconds`. The poll itself on the real control plane:
tests/cluster/modeldeployment/test_versions.py::test_a_deployment_follows_its_aliases."""

from __future__ import annotations

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.modeldeployment.reconcile import aliased

BASE = {"registry": {"local": {"path": "/r"}}, "resources": {"cpu": 1, "memory": "2Gi"}}


def spec(model: dict, **more: object) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({**BASE, "model": {"name": "bot", **model}, **more})


def test_a_reference_by_alias_anywhere_makes_it_follow() -> None:
    assert not aliased(spec({"version": "1"}))
    assert aliased(spec({"alias": "champion"}))
    canary = {"canary": {"model": {"name": "bot", "alias": "challenger"}, "weight": 10}}
    assert aliased(spec({"version": "1"}, rollout=canary))
    adapters = {"loraAdapters": [{"name": "billing", "model": {"name": "billing", "alias": "prod"}}]}
    assert aliased(spec({"version": "1"}, engine=adapters))
    pinned = {"loraAdapters": [{"name": "billing", "model": {"name": "billing", "version": "2"}}]}
    assert not aliased(spec({"version": "1"}, engine=pinned))
