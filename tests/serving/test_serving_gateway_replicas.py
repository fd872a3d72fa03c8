"""The gateway process's replicas: the weighted split between versions, and holding requests while
scaled to zero (a real vLLM on the CPU behind a relay that appears later)."""

from __future__ import annotations

import concurrent.futures
import json
import time

from llmops.dev.cluster import free_port
from tests.helpers import eventually
from tests.serving.gateway_calls import MODEL, NO_EOS, Relay, post


def test_weighted_split(vllm_server, gateway_factory):
    """Two versions (both backed by the one real vLLM here): 40 requests split exactly 30/10 at 75/25."""
    upstreams = [
        {"version": "1", "role": "stable", "weight": 75, "replicas": [vllm_server.url]},
        {"version": "2", "role": "canary", "weight": 25, "replicas": [vllm_server.url]},
    ]
    gw = gateway_factory({"servedModelName": MODEL, "upstreams": upstreams})
    client = gw.client()
    seen = []
    for _ in range(40):
        raw = client.completions.with_raw_response.create(model=MODEL, prompt="x", max_tokens=1)
        seen.append(raw.headers["x-llmops-version"])
    assert seen.count("1") == 30 and seen.count("2") == 10
    assert gw.value("llmops_gateway_requests_total", version="2", code="200") == 10
    assert gw.value("llmops_gateway_weight", version="2") == 25

    # A canary step: the operator rewrites the ConfigMap; the gateway applies new weights without a restart.
    config = json.loads(gw.config_path.read_text())
    config["upstreams"][0]["weight"], config["upstreams"][1]["weight"] = 0, 100
    gw.config_path.write_text(json.dumps(config))
    eventually(lambda: gw.value("llmops_gateway_weight", version="2") == 100, timeout=20)
    versions = {
        client.completions.with_raw_response.create(model=MODEL, prompt="x", max_tokens=1).headers[
            "x-llmops-version"
        ]
        for _ in range(5)
    }
    assert versions == {"2"}


def test_scale_to_zero_hold_then_serve(vllm_server, gateway_factory):
    """No replica is ready: requests are held and counted (KEDA's signal), then served when one appears.

    The version is found through DNS as in a cluster (a headless Service name; here `localhost`).
    """
    port = free_port()
    upstream = {"version": "1", "service": {"host": "localhost", "port": port}}
    gw = gateway_factory(
        {
            "servedModelName": MODEL,
            "upstreams": [upstream],
            "scaleToZeroHoldSeconds": 60,
            "healthCheckIntervalSeconds": 0.2,
            "queueTimeoutSeconds": 1,
        }
    )
    assert gw.value("llmops_gateway_ready_replicas", version="1") == 0
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        client = gw.client()
        held = [
            pool.submit(
                client.completions.create, model=MODEL, prompt="wake up", max_tokens=4, extra_body=NO_EOS
            )
            for _ in range(3)
        ]
        eventually(lambda: gw.value("llmops_gateway_pending_requests") == 3, timeout=20, interval=0.1)
        time.sleep(1.5)  # longer than the queue timeout: the hold, not the queue timeout, applies
        assert not any(f.done() for f in held)
        relay = Relay(port, vllm_server.port)  # "the pod became ready"
        try:
            results = [f.result(timeout=60) for f in held]
        finally:
            relay.close()
    assert all(r.usage.completion_tokens == 4 for r in results)
    assert gw.value("llmops_gateway_pending_requests") == 0
    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 3


def test_no_replica_and_hold_expiry_give_503(gateway_factory):
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway_factory({"servedModelName": MODEL, "upstreams": [{"version": "1", "replicas": [dead]}]})
    status, headers, body = post(f"{gw.url}/v1/completions", {"model": MODEL, "prompt": "x"})
    assert status == 503 and headers.get("Retry-After") and "no replica" in body["error"]["message"]

    held = gateway_factory(
        {
            "servedModelName": MODEL,
            "upstreams": [{"version": "1", "replicas": [dead]}],
            "scaleToZeroHoldSeconds": 0.5,
        },
        name="held",
    )
    start = time.monotonic()
    status, _, body = post(f"{held.url}/v1/completions", {"model": MODEL, "prompt": "x"})
    assert status == 503 and time.monotonic() - start >= 0.5
    assert held.value("llmops_gateway_errors_total", version="none", reason="queue_timeout") == 1
