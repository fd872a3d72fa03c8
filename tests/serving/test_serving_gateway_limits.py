"""The gateway process's API keys, rate limits and bounded queue, in front of a real vLLM on the CPU."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.helpers import http_get
from tests.serving.gateway_calls import MODEL, NO_EOS, post, single


def test_api_keys(vllm_server, gateway_factory, tmp_path):
    import openai

    keys = tmp_path / "keys"  # as a Secret is mounted: one file per key
    keys.mkdir()
    (keys / "team-a").write_text("sk-alpha-0123456789\n")
    (keys / "team-b").write_text("sk-bravo-9876543210")
    gw = gateway_factory(single(vllm_server.url, apiKeysPath=str(keys)))

    for key in ("none", "sk-alpha-wrong"):
        with pytest.raises(openai.AuthenticationError) as err:
            gw.client(key).completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert err.value.status_code == 401 and "API key" in err.value.message
    status, _, body = post(f"{gw.url}/v1/completions", {"model": MODEL, "prompt": "x"})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        gw.client().models.list()

    ok = gw.client("sk-bravo-9876543210").completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert ok.choices
    assert gw.value("llmops_gateway_errors_total", version="none", reason="unauthorized") == 4
    logs = gw.log.read_text()
    assert '"key": "team-b"' in logs  # the key's id is logged ...
    for secret in ("sk-alpha", "sk-bravo"):  # ... never the key
        assert secret not in logs and secret not in http_get(f"{gw.url}/metrics")[1]


def test_rate_limit_429_with_retry_after(vllm_server, gateway_factory):
    import openai

    gw = gateway_factory(single(vllm_server.url, rateLimit={"requestsPerMinute": 6, "burst": 2}))
    client = gw.client()
    for _ in range(2):
        client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as err:
        client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    retry_after = int(err.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 10  # one request per 10 s refills the bucket
    assert gw.value("llmops_gateway_requests_total", version="none", code="429") == 1
    assert gw.value("llmops_gateway_errors_total", version="none", reason="rate_limited") == 1


def test_token_rate_limit(vllm_server, gateway_factory):
    import openai

    gw = gateway_factory(single(vllm_server.url, rateLimit={"tokensPerMinute": 10}))
    client = gw.client()
    client.completions.create(model=MODEL, prompt="a few words of prompt", max_tokens=16, extra_body=NO_EOS)
    with pytest.raises(openai.RateLimitError) as err:  # the first request spent twice the minute's 10
        client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert int(err.value.response.headers["retry-after"]) >= 1


def test_overload_is_bounded(vllm_server, gateway_factory):
    """One slot at the replica and two in the queue: of 12 simultaneous streams, 3 are served, 9 get 429."""
    gw = gateway_factory(
        single(vllm_server.url, maxOutstandingPerReplica=1, maxQueue=2, queueTimeoutSeconds=60)
    )
    body = {"model": MODEL, "prompt": "Numbers such as one, two", "max_tokens": 16, "stream": True, **NO_EOS}
    barrier = threading.Barrier(12)

    def one(_: int) -> tuple[int, str | None]:
        barrier.wait()
        req = urllib.request.Request(
            f"{gw.url}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                text = r.read().decode()
                assert text.rstrip().endswith("data: [DONE]")
                return r.status, None
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Retry-After")

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    codes = sorted(code for code, _ in results)
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 3 and codes.count(429) >= 1, codes
    assert all(retry for code, retry in results if code == 429)
    assert gw.value("llmops_gateway_errors_total", version="none", reason="queue_full") == codes.count(429)
    assert gw.value("llmops_gateway_pending_requests") == 0
