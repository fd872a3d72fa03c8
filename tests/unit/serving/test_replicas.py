"""The version groups and replicas of one gateway (serving.replicas): applying and reloading the config."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from llmops.gateway_config import GatewayConfig, UpstreamGroup
from llmops.serving.metrics import Metrics
from llmops.serving.replicas import ReplicaPool


def _config(**weights: int) -> GatewayConfig:
    return GatewayConfig(
        served_model_name="m",
        upstreams=[
            UpstreamGroup(version=v, weight=w, replicas=[f"http://127.0.0.1:9/{v}/"])
            for v, w in weights.items()
        ],
    )


def test_apply_keeps_the_replicas_of_kept_groups_and_follows_the_gauges():
    registry = CollectorRegistry()
    pool = ReplicaPool(_config(a=90, b=10), Metrics(registry))
    kept = pool.balancer.groups["a"].replicas["http://127.0.0.1:9/a"]  # the trailing / is dropped
    kept.outstanding = 2
    pool.apply(_config(a=100).upstreams)
    assert list(pool.balancer.groups) == ["a"] and pool.balancer.groups["a"].weight == 100
    assert pool.balancer.groups["a"].replicas["http://127.0.0.1:9/a"] is kept
    assert registry.get_sample_value("llmops_gateway_weight", {"version": "a"}) == 100
    assert registry.get_sample_value("llmops_gateway_weight", {"version": "b"}) is None
    assert registry.get_sample_value("llmops_gateway_ready_replicas", {"version": "b"}) == 0
    pool.mark_unready(kept)
    assert (
        not kept.ready and registry.get_sample_value("llmops_gateway_ready_replicas", {"version": "a"}) == 0
    )


def test_reload_config_applies_a_changed_file_and_ignores_an_invalid_one(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(_config(a=90, b=10).dumps())
    pool = ReplicaPool(GatewayConfig.load(path), Metrics(CollectorRegistry()), config_path=path)

    async def scenario():
        pool.open()
        try:
            await pool.reload_config()  # unchanged: nothing to do
            assert pool.balancer.groups["b"].weight == 10
            path.write_text(_config(a=50, b=50).dumps())
            await pool.reload_config()
            assert {v: g.weight for v, g in pool.balancer.groups.items()} == {"a": 50, "b": 50}
            path.write_text('{"servedModelName": "m", "upstreams": []}')
            await pool.reload_config()  # invalid: the old groups stay
            assert {v: g.weight for v, g in pool.balancer.groups.items()} == {"a": 50, "b": 50}
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_model_cards_before_any_replica_answered():
    pool = ReplicaPool(_config(a=100), Metrics(CollectorRegistry()))

    async def scenario():
        pool.open()
        try:
            return await pool.model_cards()  # no replica is ready: nobody is asked
        finally:
            await pool.close()

    cards = asyncio.run(scenario())
    assert cards == [{"id": "m", "object": "model", "created": pool.started, "owned_by": "llmops"}]
