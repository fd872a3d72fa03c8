"""Autoscalers of the model servers (llmops/operators/modeldeployment/autoscaling.py)."""

from __future__ import annotations

import dataclasses

from llmops.gateway_config import GatewayConfig
from llmops.operators.modeldeployment.autoscaling import DEFAULT_REPLICAS, writes_start_count
from llmops.operators.modeldeployment.builders import build
from llmops.operators.modeldeployment.vllm import vllm_deployment
from tests.unit.operators.modeldeployment.cases import (
    SETTINGS,
    case,
    objects,
)


def test_autoscaled_deployments_start_at_the_autoscalers_count_then_leave_it_to_the_autoscaler() -> None:
    """Created (not in plan.existing): the count the autoscaler holds the version at, written when the
    apiserver's default (1) would not give it, else left out from the start (the manifest is then the
    same created or not: nothing to look up, nothing to hand over); existing: no `replicas`, the
    autoscaler's."""
    seen = {}
    for name in ("canary", "scale-to-zero", "single+hpa", "lora-adapters"):
        parent, spec, plan = case(name)
        existing = dataclasses.replace(plan, existing=frozenset(v.deployment for v in plan.versions))
        for created, later in zip(
            build(spec, parent, plan, SETTINGS), build(spec, parent, existing, SETTINGS), strict=True
        ):
            if created["kind"] == "Deployment" and created["metadata"]["name"].endswith("-vllm"):
                served = next(v for v in plan.versions if v.deployment == created["metadata"]["name"])
                seen[(name, served.role)] = created["spec"].get("replicas", "default")
                assert writes_start_count(spec, served) == ("replicas" in created["spec"]), (name, served)
                assert {**created["spec"], "replicas": None} == {**later["spec"], "replicas": None}
                assert "replicas" not in later["spec"], name
    print("start replicas:", seen)
    # canary: stable min 2 (KEDA), the canary 1 (the default's); scale to zero: idle 0; HPA and the
    # LoRA example (KEDA): minReplicas 1 (the default's).
    assert seen == {
        ("canary", "stable"): 2,
        ("canary", "canary"): "default",
        ("scale-to-zero", "stable"): 0,
        ("single+hpa", "stable"): "default",
        ("lora-adapters", "stable"): "default",
    }
    # An HPA from 2: created at 2, then left to the HPA.
    parent, spec, plan = case("single+hpa")
    spec = spec.model_copy(update={"autoscaling": spec.autoscaling.model_copy(update={"min_replicas": 2})})
    (served,) = plan.versions
    assert vllm_deployment(spec, parent, served, (), SETTINGS)["spec"]["replicas"] == 2 != DEFAULT_REPLICAS
    assert "replicas" not in vllm_deployment(spec, parent, served, (), SETTINGS, exists=True)["spec"]


def test_keda_scale_to_zero() -> None:
    so = objects("scale-to-zero")[("ScaledObject", "report-writer-7-vllm")]["spec"]
    # minReplicas 1 with scaleToZero: idle at 0, at least 1 while there is traffic.
    assert (so["idleReplicaCount"], so["minReplicaCount"], so["maxReplicaCount"]) == (0, 1, 3)
    triggers = {t["name"]: t for t in so["triggers"]}
    assert set(triggers) == {"queue", "pending"}
    assert triggers["queue"]["metadata"]["threshold"] == "8"
    assert "llmops_gateway_pending_requests" in triggers["pending"]["metadata"]["query"]
    assert triggers["pending"]["metadata"]["activationThreshold"] == "0"
    assert so["cooldownPeriod"] == 900
    behavior = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 900


def test_canary_scaled_objects_and_weights() -> None:
    objs = objects("canary")
    stable = objs[("ScaledObject", "support-bot-canary-3-vllm")]["spec"]
    cand = objs[("ScaledObject", "support-bot-canary-4-vllm")]["spec"]
    assert (stable["minReplicaCount"], cand["minReplicaCount"]) == (2, 1)
    kv = {t["name"]: t for t in stable["triggers"]}["kvCache"]["metadata"]
    assert "vllm:kv_cache_usage_perc" in kv["query"] and "vllm:gpu_cache_usage_perc" in kv["query"]
    assert kv["threshold"] == "0.8"
    config = GatewayConfig.model_validate_json(
        objs[("ConfigMap", "support-bot-canary-gateway")]["data"]["config.json"]
    )
    assert [(u.version, u.role, u.weight) for u in config.upstreams] == [
        ("3", "stable", 75),
        ("4", "canary", 25),
    ]
    assert (
        config.upstreams[1].service
        and config.upstreams[1].service.host == "support-bot-canary-4-vllm.demo.svc"
    )
    assert config.api_keys_path and config.pii_redaction and config.payload_sampling
    assert config.drift_sampling and config.drift_sampling.destination.s3
    assert config.drift_sampling.destination.s3.prefix == "support-bot/drift-prompts"


def test_hpa_on_external_metrics() -> None:
    hpa = objects("single+hpa")[("HorizontalPodAutoscaler", "support-bot-3-vllm")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    metric = hpa["metrics"][0]["external"]
    assert metric["metric"]["selector"]["matchLabels"] == {"model_deployment": "support-bot", "version": "3"}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_suspended_versions_are_at_zero_and_no_autoscaler_wakes_them() -> None:
    """spec.suspend: every model server's Deployment wants 0 replicas; a ScaledObject is paused at 0
    (KEDA's paused-replicas annotation); an HPA is kept as it is (a target at 0 replicas deactivates
    it); nothing else of the child set changes but the gateway's config (its `suspension`)."""
    for name in ("canary", "single+hpa"):
        running, suspended = objects(name), objects(f"{name}+suspended")
        assert set(running) == set(suspended), name  # nothing added, nothing removed
        for key, m in suspended.items():
            kind = key[0]
            if (
                kind == "Deployment"
                and m["metadata"]["labels"]["app.kubernetes.io/component"] == "model-server"
            ):
                assert m["spec"]["replicas"] == 0, key
                assert {**m["spec"], "replicas": None} == {**running[key]["spec"], "replicas": None}, key
            elif kind == "ScaledObject":
                assert m["metadata"]["annotations"] == {"autoscaling.keda.sh/paused-replicas": "0"}
                assert m["spec"] == running[key]["spec"]
            elif kind == "ConfigMap" and key[1].endswith("-gateway"):
                config = GatewayConfig.model_validate_json(m["data"]["config.json"])
                assert config.suspension is not None and config.suspension.namespace == "demo"
                before = GatewayConfig.model_validate_json(running[key]["data"]["config.json"])
                assert config.model_copy(update={"suspension": None}) == before
            else:  # the HPA, the gateway (not restarted), Services, budgets, policies, monitors
                assert m == running[key], key


def test_resuming_writes_an_autoscaled_versions_floor_once() -> None:
    """The first reconcile after a suspend (plan.resuming): an autoscaled version's Deployment gets its
    floor of replicas (the stable's minReplicas, the canary's count), since left at 0 it would stay
    there; every other reconcile leaves the count to the autoscaler."""
    parent, spec, plan = case("canary")
    for served, floor in zip(plan.versions, (spec.autoscaling.min_replicas, 1), strict=True):
        resumed = vllm_deployment(spec, parent, served, (), SETTINGS, resuming=True)
        assert resumed["spec"]["replicas"] == floor, served.role
        assert "replicas" not in vllm_deployment(spec, parent, served, (), SETTINGS, exists=True)["spec"]


def test_while_the_gateway_drains_the_servers_and_autoscalers_stay_as_they_are() -> None:
    """plan.draining: spec.suspend, but the model servers wait for the gateway to drain: their
    Deployments and ScaledObjects are rendered as if not suspended; only the gateway's config says it."""
    parent, spec, plan = case("canary")
    suspended = spec.model_copy(update={"suspend": True})
    running = {(m["kind"], m["metadata"]["name"]): m for m in build(spec, parent, plan, SETTINGS)}
    draining = build(suspended, parent, dataclasses.replace(plan, draining=True), SETTINGS)
    for m in draining:
        key = (m["kind"], m["metadata"]["name"])
        if key == ("ConfigMap", "support-bot-canary-gateway"):
            assert '"suspension"' in m["data"]["config.json"]
        else:
            assert m == running[key], key
