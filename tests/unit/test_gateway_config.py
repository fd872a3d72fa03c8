"""The gateway's config file (llmops.gateway_config): its JSON shape, its checks, and how a
ModelDeployment's gateway spec maps onto it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from llmops.api.modeldeployment import PiiRedaction, RateLimit
from llmops.gateway_config import (
    GatewayConfig,
    UpstreamGroup,
    per_replica,
)


def test_config_round_trip_and_camel_case(tmp_path):
    cfg = GatewayConfig(
        served_model_name="llama",
        upstreams=[
            UpstreamGroup(
                version="3", weight=90, service={"host": "llama-v3.ns.svc.cluster.local", "port": 8000}
            ),
            UpstreamGroup(version="4", role="canary", weight=10, replicas=["http://10.0.0.1:8000"]),
        ],
        rate_limit=RateLimit(requests_per_minute=60, burst=5),
        scale_to_zero_hold_seconds=120,
        pii_redaction=PiiRedaction(scope="prompts", regions=["DE", "FR"]),
    )
    text = cfg.dumps()
    data = json.loads(text)
    assert data["servedModelName"] == "llama"
    assert data["upstreams"][0]["service"]["host"] == "llama-v3.ns.svc.cluster.local"
    assert data["rateLimit"] == {"requestsPerMinute": 60, "burst": 5}
    path = tmp_path / "config.json"
    path.write_text(text)
    assert GatewayConfig.load(path) == cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"upstreams": []}, "at least 1"),
        ({"upstreams": [{"version": "1", "weight": 0, "replicas": ["http://a:1"]}]}, "weight above 0"),
        (
            {
                "upstreams": [
                    {"version": "1", "replicas": ["http://a:1"]},
                    {"version": "1", "replicas": ["http://b:1"]},
                ]
            },
            "unique",
        ),
        ({"upstreams": [{"version": "1"}]}, "exactly one of replicas or service"),
        ({"maxQueue": -1}, "greater than or equal"),
        ({"queueTimeoutSeconds": 0}, "greater than 0"),
        ({"surprise": 1}, "Extra inputs"),
        ({"piiRedaction": {"scope": "everything"}}, "promptsAndAnswers"),
        ({"piiRedaction": {"regions": ["us"]}}, "pattern"),
        ({"piiRedaction": {"entities": ["ssn"]}}, "creditCard"),
        ({"piiRedaction": True}, "valid dictionary"),
    ],
)
def test_config_rejects(change, message):
    base = {"servedModelName": "m", "upstreams": [{"version": "1", "replicas": ["http://a:1"]}]}
    with pytest.raises(ValidationError, match=message):
        GatewayConfig.model_validate({**base, **change})


def test_per_replica_share_of_limits():
    limit = RateLimit(requests_per_minute=5, tokens_per_minute=1000, burst=3)
    assert per_replica(limit, 1) == limit and per_replica(None, 3) is None
    assert per_replica(limit, 3) == RateLimit(requests_per_minute=2, tokens_per_minute=334, burst=1)
