"""Which ModelDeployments follow aliases (llmops/operators/modeldeployment/reconcile.py `aliased`): those
are reconciled every `alias_poll_seconds` (paced beyond `alias_poll_rate`:
tests/unit/operators/test_pacing.py). The poll itself on the real control plane:
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


def test_an_unchanged_deployment_is_read_from_the_views_not_the_api() -> None:
    """Reconciler.apply: a Deployment applied and unchanged since is read from `deployments` (what its
    apply answered, then what the watch shows), not with a GET; with no view it is read from the API
    once and kept. Other unchanged children are neither applied nor read."""
    import logging

    from llmops.operators.modeldeployment.plan import ServingSettings
    from llmops.operators.modeldeployment.reconcile import Reconciler
    from llmops.operators.runtime import Context

    class Applier:  # counts what reaches the API (the apply and read paths of operators.apply.Applier)
        def __init__(self) -> None:
            self.applies: list[str] = []
            self.gets: list[str] = []
            self.uid = "u-"

        def apply(self, manifest: dict) -> dict:
            self.applies.append(manifest["metadata"]["name"])
            meta = {**manifest["metadata"], "uid": "u-" + manifest["metadata"]["name"], "generation": 1}
            return {**manifest, "metadata": meta, "status": {"observedGeneration": 0}}

        def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict | None:
            self.gets.append(name)
            meta = {"name": name, "namespace": namespace, "uid": self.uid + name, "generation": 1}
            return {"metadata": meta, "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}

    def manifest(kind: str, name: str) -> dict:
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "ns"}, "spec": {}}

    applier = Applier()
    body = {"metadata": {"name": "md", "namespace": "ns", "uid": "p"}}
    ctx = Context(body=body, applier=applier, logger=logging.getLogger("test"))  # type: ignore[arg-type]
    reconciler = Reconciler(ServingSettings(resync_seconds=600))
    children = [manifest("Deployment", "a"), manifest("Service", "a")]
    assert reconciler.apply(ctx, children)["a"]["status"] == {"observedGeneration": 0}
    assert applier.applies == ["a", "a"] and applier.gets == []
    assert reconciler.apply(ctx, children)["a"]["status"] == {"observedGeneration": 0}  # from the view
    ready = {**applier.get("", "", "a", "ns"), "status": {"observedGeneration": 1, "readyReplicas": 1}}
    applier.gets.clear()
    reconciler.deployments.record(ready)  # the watch's next event
    assert reconciler.apply(ctx, children)["a"]["status"]["readyReplicas"] == 1
    assert applier.applies == ["a", "a"] and applier.gets == []
    reconciler.deployments.forget(ready)  # deleted, and made again by someone else, unseen yet
    applier.uid = "u2-"
    assert reconciler.apply(ctx, children)["a"]["status"]["readyReplicas"] == 1
    assert applier.gets == ["a"] and reconciler.deployments.get("ns", "a") is not None


def test_an_autoscaled_deployment_is_looked_for_only_when_its_start_count_is_written() -> None:
    """Reconciler.existing (Plan.existing): a version whose autoscaler starts it at the apiserver's
    default of 1 is not looked for (its manifest leaves `replicas` out created or not); one that starts
    elsewhere (min 2, scale to zero's 0) is, from the API when no view has it; a fixed count never."""
    import logging

    from llmops.operators.modeldeployment.plan import ServedVersion, ServingSettings
    from llmops.operators.modeldeployment.reconcile import Reconciler
    from llmops.operators.runtime import Context

    gets: list[str] = []

    class Applier:
        def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict | None:
            gets.append(name)
            return None  # not there yet

    body = {"metadata": {"name": "md", "namespace": "ns", "uid": "p"}}
    ctx = Context(body=body, applier=Applier(), logger=logging.getLogger("test"))  # type: ignore[arg-type]
    stable = ServedVersion("bot", "1", "stable", 100, "md-1-vllm")
    for autoscaling, looked in (
        ({"minReplicas": 1, "maxReplicas": 4}, False),
        ({"minReplicas": 1, "maxReplicas": 4, "engine": "hpa"}, False),
        ({"minReplicas": 2, "maxReplicas": 4}, True),
        ({"minReplicas": 1, "maxReplicas": 3, "scaleToZero": True}, True),
        ({"minReplicas": 2, "maxReplicas": 2}, False),  # a fixed count: never the autoscaler's
    ):
        gets.clear()
        reconciler = Reconciler(ServingSettings())
        md_spec = spec({"version": "1"}, autoscaling=autoscaling)
        assert reconciler.existing(ctx, md_spec, [stable]) == frozenset(), autoscaling
        assert gets == (["md-1-vllm"] if looked else []), autoscaling
