"""What ends a request early, through the gateway process: an upstream that dies mid-stream
(tests/serving/fake_upstream.py), a client that goes away in any state (the work it started stops,
in vLLM too), and a graceful drain on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket

import pytest

from llmops.dev.cluster import free_port
from tests.helpers import eventually, http_get
from tests.serving.gateway_calls import (
    MODEL,
    NO_EOS,
    PII_TEXT,
    logged,
    post,
    send_raw,
    single,
    upstream_events,
)


def test_upstream_dies_mid_stream(gateway_factory, fake_upstream):
    """The peer is a real process that exits in the middle of a response (fake_upstream.py --mode dies)."""
    import openai

    url = fake_upstream("dies")
    gw = gateway_factory(single(url, healthCheckIntervalSeconds=0.2))
    stream = gw.client().completions.create(model=MODEL, prompt="x", max_tokens=8, stream=True)
    got = []
    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in stream:
            got.append(chunk.choices[0].text)
    assert got == ["one", " two"]
    assert gw.proc.poll() is None and http_get(f"{gw.url}/healthz")[0] == 200
    assert gw.value("llmops_gateway_errors_total", version="1", reason="upstream_disconnect") == 1
    assert gw.value("llmops_gateway_requests_total", version="1", code="502") == 1
    # The dead replica fails its health check; with nothing left, new requests get 503, not a hang.
    eventually(lambda: gw.value("llmops_gateway_ready_replicas", version="1") == 0, timeout=10)
    status, _, _ = post(f"{gw.url}/v1/completions", {"model": MODEL, "prompt": "x"})
    assert status == 503


def test_client_disconnect_mid_stream(gateway_factory, fake_upstream):
    """A client that hangs up is counted as 499 (not an upstream failure); the gateway carries on."""
    import http.client

    url = fake_upstream("pii", "--delay", "0.2")
    gw = gateway_factory(single(url))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request(
        "POST",
        "/v1/completions",
        json.dumps({"model": MODEL, "prompt": "x", "stream": True}),
        {"Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read1(100).startswith(b"data: ")
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    eventually(lambda: gw.value("llmops_gateway_requests_total", version="1", code="499") == 1, timeout=15)
    assert gw.value("llmops_gateway_errors_total", version="1", reason="client_disconnect") == 1
    assert gw.value("llmops_gateway_errors_total", version="1", reason="upstream_disconnect") == 0
    ok = gw.client().completions.create(model=MODEL, prompt="x")
    assert ok.choices[0].text


def test_graceful_drain_on_sigterm(gateway_factory, fake_upstream):
    """SIGTERM: the stream in progress finishes, new requests are refused, the process exits 0.

    The upstream streams slowly on purpose (0.2 s per chunk) so the drain is observable.
    """
    url = fake_upstream("pii", "--delay", "0.2")
    gw = gateway_factory(single(url, drainTimeoutSeconds=20))
    stream = gw.client().completions.create(model=MODEL, prompt="x", stream=True)
    it = iter(stream)
    first = next(it)
    gw.proc.send_signal(signal.SIGTERM)
    eventually(lambda: http_get(f"{gw.url}/readyz")[0] == 503, timeout=5, interval=0.05)
    status, _, body = post(f"{gw.url}/v1/completions", {"model": MODEL, "prompt": "x"})
    assert status == 503 and "shutting down" in body["error"]["message"]
    rest = [c.choices[0].text for c in it]
    assert first.choices[0].text + "".join(rest) == PII_TEXT
    assert gw.proc.wait(30) == 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("hang_at", ["read", "headers", "body"])
def test_client_disconnect_closes_the_upstream_request(
    gateway_factory, fake_upstream, tmp_path, hang_at, stream
):
    """The client hangs up while the gateway is sending upstream (`read`: the replica has not read the
    body), waiting for the upstream's headers, or reading its body / relaying its stream: the gateway
    closes its upstream request (the replica sees its connection closed long before its answer would
    end: it never ends) and counts a 499, not a 200 or a 5xx."""
    events = tmp_path / "events.jsonl"
    url = fake_upstream("hang", "--hang-at", hang_at, "--events", str(events))
    gw = gateway_factory(single(url, maxRequestBytes=64 << 20))
    # `read`: a body far larger than the socket buffers, so the gateway is still writing it.
    prompt = "x" * (24 << 20) if hang_at == "read" else "Hello"
    sock = send_raw(gw.port, "/v1/completions", {"model": MODEL, "prompt": prompt, "stream": stream}, "r1")
    mark = "part" if hang_at == "body" else "start"
    # The replica sees the gateway's own request id (serving.feedback), not the client's.
    eventually(lambda: any(e == mark for e, _ in upstream_events(events)), timeout=30, interval=0.05)
    rid = upstream_events(events)[0][1]
    if hang_at == "body" and stream:  # the first event reached the client: the gateway is relaying
        assert b"data: " in sock.recv(65536)
    sock.close()
    eventually(lambda: ("closed", rid) in upstream_events(events), timeout=30, interval=0.05)
    eventually(lambda: gw.value("llmops_gateway_requests_total", version="1", code="499") == 1, timeout=10)
    assert gw.value("llmops_gateway_errors_total", version="1", reason="client_disconnect") == 1
    codes = {labels for (name, labels) in gw.metrics() if name == "llmops_gateway_requests_total"}
    assert codes == {(("code", "499"), ("version", "1"))}
    assert gw.value("llmops_gateway_inflight_requests", version="1") == 0
    eventually(lambda: logged(gw, code=499, reason="client_disconnect", version="1"), timeout=10)


@pytest.mark.parametrize("where", ["queue", "hold"])
def test_client_disconnect_while_waiting_never_reaches_a_replica(
    gateway_factory, fake_upstream, tmp_path, where
):
    """Queued behind a busy replica (`queue`), or held while no replica is ready (`hold`, scale to
    zero): a client that hangs up leaves the queue at once as a 499, and its request is never sent."""
    events = tmp_path / "events.jsonl"
    url = fake_upstream("hang", "--hang-at", "headers", "--events", str(events))
    if where == "queue":
        gw = gateway_factory(single(url, maxOutstandingPerReplica=1))
        busy = send_raw(gw.port, "/v1/completions", {"model": MODEL, "prompt": "x"}, "busy")
        eventually(lambda: upstream_events(events), timeout=30, interval=0.05)
        busy_id = upstream_events(events)[0][1]  # the gateway's id of the request (serving.feedback)
    else:
        dead = f"http://127.0.0.1:{free_port()}"
        gw = gateway_factory(single(dead, scaleToZeroHoldSeconds=600))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
    waiting = send_raw(gw.port, "/v1/chat/completions", body, "waiting")
    eventually(lambda: gw.value("llmops_gateway_pending_requests") == 1, timeout=30, interval=0.05)
    waiting.close()
    eventually(lambda: gw.value("llmops_gateway_requests_total", version="none", code="499") == 1, timeout=10)
    assert gw.value("llmops_gateway_pending_requests") == 0
    assert gw.value("llmops_gateway_errors_total", version="none", reason="client_disconnect") == 1
    eventually(lambda: logged(gw, code=499, reason="client_disconnect", version="none"), timeout=10)
    if where == "queue":
        busy.close()  # frees the one slot at once: the next request goes straight to the replica
        eventually(lambda: ("closed", busy_id) in upstream_events(events), timeout=30, interval=0.05)
        after = send_raw(gw.port, "/v1/completions", {"model": MODEL, "prompt": "x"}, "after")

        def started() -> list[str]:
            return [rid for event, rid in upstream_events(events) if event == "start"]

        eventually(lambda: len(started()) == 2, timeout=30, interval=0.05)
        after_id = started()[1]
        after.close()
        eventually(lambda: ("closed", after_id) in upstream_events(events), timeout=30, interval=0.05)
        assert started() == [busy_id, after_id] and after_id != busy_id
        eventually(
            lambda: gw.value("llmops_gateway_requests_total", version="1", code="499") == 2, timeout=10
        )


def test_client_disconnect_aborts_the_request_in_vllm(vllm_server, gateway_factory):
    """Against the real vLLM: a client that hangs up mid-answer (streamed), or while its request is at
    vLLM (plain), makes vLLM abort the request. vLLM counts every request that finishes in
    `vllm:request_success_total` by `finished_reason` (stop, length, ...); an aborted one is not
    counted there and stops generating, so: no new `length` finish, and far fewer tokens generated
    than were asked for."""
    gw = gateway_factory(single(vllm_server.url))

    def vllm_metrics() -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, float] = {}
        for family in text_string_to_metric_families(http_get(f"{vllm_server.url}/metrics")[1]):
            for s in family.samples:
                if s.labels.get("model_name", MODEL) == MODEL:
                    key = s.name + "".join(
                        f",{k}={v}" for k, v in sorted(s.labels.items()) if k == "finished_reason"
                    )
                    out[key] = out.get(key, 0.0) + s.value
        return out

    for i, stream in enumerate((True, False)):
        # Choices of 240 tokens each, at most 64 at a time (the server's --max-num-seqs): measured here,
        # 64 choices take 1 s, 256 take 3 s and 1024 take 11 s for the tiny model on the CPU. The hang-up
        # must reach vLLM while it still works, on a loaded machine too (a CI run once saw vLLM finish
        # 256 plain choices first), so both get 1024; an aborted request costs only what ran before.
        n = 1024
        before = vllm_metrics()
        body = {"model": MODEL, "prompt": "Once", "max_tokens": 240, "n": n, "stream": stream, **NO_EOS}
        sock = send_raw(gw.port, "/v1/completions", body, f"abort-{i}")
        if stream:
            got = b""
            while got.count(b"data: ") < 2:
                got += sock.recv(65536)
        else:  # the gateway has sent it to vLLM (vLLM's own /metrics can answer late while it works)
            eventually(
                lambda: gw.value("llmops_gateway_inflight_requests", version="1") == 1,
                timeout=60,
                interval=0.02,
            )
        sock.close()
        eventually(lambda: vllm_metrics()["vllm:num_requests_running"] == 0, timeout=60, interval=0.1)
        after = vllm_metrics()
        finished = "vllm:request_success_total,finished_reason=length"
        assert after[finished] == before[finished], "vLLM finished the request: it was not aborted"
        generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
        assert generated < n * 240, generated
        eventually(
            lambda i=i: gw.value("llmops_gateway_requests_total", version="1", code="499") == i + 1,
            timeout=10,
        )
    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 0
