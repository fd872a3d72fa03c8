"""The gateway as deployed (`python -m serving.gateway`) in front of a real vLLM on the CPU.

Clients are the official `openai` package and plain HTTP. Where a real vLLM cannot be made to fail on
cue, a small aiohttp upstream in its own process stands in (tests/serving/fake_upstream.py): one that
dies mid-stream, and one that returns personal data and records what it received.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from llmops import jsonl
from llmops.dev.cluster import free_port
from llmops.dev.tools import binary
from tests.helpers import eventually, http_get

MODEL = "tiny"
PII_TEXT = "Mail bob.jones@example.com or call 555-123-4567; card 4111 1111 1111 1111."  # fake_upstream's
PII_ARGS = {"email": "bob.jones@example.com", "phone": "+1 415 555 0132", "card": 4111111111111111}
REDACT_ALL = {"scope": "promptsAndAnswers", "regions": ["US"]}
NO_EOS = {"ignore_eos": True}  # a random model may stop at once; these tests want exactly max_tokens


def post(url: str, body: bytes | str | dict, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


def single(vllm_url: str, **extra) -> dict:
    return {"servedModelName": MODEL, "upstreams": [{"version": "1", "replicas": [vllm_url]}], **extra}


def test_openai_client_plain_and_streaming(vllm_server, gateway_factory):
    gw = gateway_factory(single(vllm_server.url))
    client = gw.client()
    assert [m.id for m in client.models.list()] == [MODEL]

    done = client.completions.create(model=MODEL, prompt="The river ran", max_tokens=8, extra_body=NO_EOS)
    assert done.choices[0].text and done.usage.completion_tokens == 8

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=6, extra_body=NO_EOS
    )
    assert chat.choices[0].message.content and chat.usage.completion_tokens == 6

    chunks = list(
        client.completions.create(
            model=MODEL, prompt="A cup of tea", max_tokens=8, stream=True, extra_body=NO_EOS
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    # The gateway asked vLLM for usage to count tokens; the client did not, so it gets no usage chunk.
    assert all(c.choices for c in chunks) and all(getattr(c, "usage", None) is None for c in chunks)

    with_usage = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NO_EOS,
        )
    )
    assert with_usage[-1].usage.completion_tokens == 5

    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 4
    assert gw.value("llmops_gateway_completion_tokens_total", version="1") == 8 + 6 + 8 + 5
    assert gw.value("llmops_gateway_prompt_tokens_total", version="1") > 0
    assert gw.value("llmops_gateway_time_to_first_token_seconds_count", version="1") == 2
    assert gw.value("llmops_gateway_request_duration_seconds_count", version="1") == 4
    assert gw.value("llmops_gateway_ready_replicas", version="1") == 1


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


def test_malformed_requests_get_400(vllm_server, gateway_factory):
    gw = gateway_factory(single(vllm_server.url, maxRequestBytes=2048))
    url = f"{gw.url}/v1/completions"
    cases = [
        (b"{not json", 400, "not valid JSON"),
        ([1, 2], 400, "JSON object"),
        ({"prompt": "x"}, 400, "'model' is required"),
        ({"model": MODEL}, 400, "'prompt' is required"),
        ({"model": MODEL, "prompt": "x", "stream": "yes"}, 400, "'stream'"),
        ({"model": MODEL, "prompt": "x", "max_tokens": -1}, 400, "'max_tokens'"),
        ({"model": "gpt-9", "prompt": "x"}, 404, "does not exist"),
        ({"model": MODEL, "prompt": "x" * 4000}, 413, "exceeds"),
    ]
    for body, code, words in cases:
        status, _, answer = post(url, body)
        assert status == code, (body, answer)
        assert words in answer["error"]["message"], answer
    status, _, answer = post(
        f"{gw.url}/v1/chat/completions", {"model": MODEL, "messages": [{"content": "x"}]}
    )
    assert status == 400 and "role" in answer["error"]["message"]
    # What only vLLM can judge passes through with vLLM's own 400: longer than --max-model-len 256.
    status, _, answer = post(url, {"model": MODEL, "prompt": "x", "max_tokens": 100000})
    assert status == 400 and answer["error"]["message"]
    assert gw.value("llmops_gateway_errors_total", version="none", reason="bad_request") == 7
    assert gw.value("llmops_gateway_errors_total", version="1", reason="upstream_400") == 1
    assert http_get(f"{gw.url}/healthz")[0] == 200


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


class Relay:
    """A TCP relay that appears on a port later: a replica that comes up after a scale from zero."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.running = False
        self.server.close()


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


def test_pii_redaction_and_payload_sampling(gateway_factory, fake_upstream, vllm_server, tmp_path):
    record = tmp_path / "upstream-requests.jsonl"
    samples = tmp_path / "samples"
    url = fake_upstream("pii", "--record", str(record))
    sampling = {"rate": 1.0, "destination": {"local": {"path": str(samples)}}, "flushIntervalSeconds": 0.2}
    gw = gateway_factory(
        single(url, piiRedaction=REDACT_ALL, payloadSampling=sampling, driftSampling=sampling)
    )
    client = gw.client()
    secret = "Contact jane.roe@example.org or +1 (555) 010-9999 from 10.2.3.4"

    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": secret}], stream=True
        )
        if c.choices
    )
    plain = client.completions.create(model=MODEL, prompt=secret).choices[0].text
    for text in (streamed, plain):
        assert text == "Mail [EMAIL] or call [PHONE]; card [CARD]."
    seen = [row for _, row in jsonl.read_path(record)]
    assert seen[0]["messages"][0]["content"] == "Contact [EMAIL] or [PHONE] from [IP]"
    assert seen[1]["prompt"] == "Contact [EMAIL] or [PHONE] from [IP]"

    def stored() -> str:
        return "".join(p.read_text() for p in samples.rglob("*.jsonl")) if samples.exists() else ""

    eventually(lambda: stored().count("\n") >= 4, timeout=10)  # 2 payloads + 2 prompts
    text = stored()
    assert "[EMAIL]" in text and "jane.roe" not in text and "bob.jones" not in text and "4111" not in text

    # End to end on the real model: with echo, vLLM returns the prompt it received.
    real = gateway_factory(single(vllm_server.url, piiRedaction=REDACT_ALL), name="real")
    echoed = real.client().completions.create(model=MODEL, prompt=secret, max_tokens=1, echo=True)
    assert echoed.choices[0].text.startswith("Contact [EMAIL] or [PHONE] from [IP]")


def test_pii_redaction_of_tool_calls_choices_and_history(gateway_factory, fake_upstream, tmp_path):
    """Tool-call arguments in answers (streamed in fragments, and whole) and in the message history,
    and n = 2 interleaved streamed choices, through the gateway process with the `openai` client."""
    record = tmp_path / "upstream-requests.jsonl"
    url = fake_upstream("pii", "--record", str(record))
    client = gateway_factory(single(url, piiRedaction=REDACT_ALL)).client()
    tools = [{"type": "function", "function": {"name": "notify", "parameters": {"type": "object"}}}]
    history = [
        {"role": "user", "content": "Tell Ann"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "notify", "arguments": json.dumps({"to": "ann@example.org"})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "sent to ann@example.org, +1 415 555 0199"},
        {"role": "user", "content": [{"type": "text", "text": "and bob.jones@example.com too"}]},
    ]
    expected = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]"}

    whole = client.chat.completions.create(model=MODEL, messages=history, tools=tools)
    call = whole.choices[0].message.tool_calls[0]
    assert call.function.name == "notify" and json.loads(call.function.arguments) == expected

    arguments = ""
    for c in client.chat.completions.create(model=MODEL, messages=history, tools=tools, stream=True):
        for delta_call in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            arguments += delta_call.function.arguments or ""
    assert json.loads(arguments) == expected  # valid JSON, whatever the fragments

    seen = [row for _, row in jsonl.read_path(record)]
    sent = seen[0]["messages"]
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"to": "[EMAIL]"}
    assert sent[2]["content"] == "sent to [EMAIL], [PHONE]"
    assert sent[3]["content"][0]["text"] == "and [EMAIL] too"

    texts = {0: "", 1: ""}
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2, stream=True
    )
    for c in stream:
        for choice in c.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {
        0: "Mail [EMAIL] or call [PHONE]; card [CARD].",
        1: "Mail [EMAIL] or call [PHONE]; card [CARD].",
    }


ISSUE_CHUNKS = ["Call", " (", "555", ")", " 123", "-", "4567", " now"]


def test_a_stream_split_anywhere_is_redacted_whole(gateway_factory, fake_upstream):
    """The issue's chunks, then random splits of a text with every entity (hypothesis), streamed by
    the upstream as 2 interleaved choices through the gateway process: each choice the client gets
    equals the whole text redacted, and no chunk carries a digit of a number before it is settled."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from llmops.pii import Detector

    client = gateway_factory(single(fake_upstream("pii"), piiRedaction=REDACT_ALL)).client()
    detector = Detector(regions=["US"])

    def streamed(pieces: list[str]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {0: [], 1: []}
        chunks = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            n=2,
            extra_body={"pieces": pieces},
        )
        for c in chunks:
            for choice in c.choices:
                out[choice.index].append(choice.delta.content or "")
        return out

    got = streamed(ISSUE_CHUNKS)
    assert "".join(got[0]) == "".join(got[1]) == "Call [PHONE] now"
    assert not any(ch.isdigit() for piece in got[0] for ch in piece)

    text = "Call (555) 123-4567 or +44 20 7946 0958, mail jane.doe@example.com, card 4111 1111 1111 1111 now."

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=len(text) - 1), max_size=20, unique=True))
    def split_anywhere(cuts: list[int]) -> None:
        bounds = [0, *sorted(cuts), len(text)]
        pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
        got = streamed(pieces)
        assert "".join(got[0]) == "".join(got[1]) == detector.redact(text)

    split_anywhere()


@pytest.mark.parametrize(
    ("scope", "model_sees", "client_gets"),
    [("stored", "raw", "raw"), ("prompts", "redacted", "raw"), ("promptsAndAnswers", "redacted", "redacted")],
)
def test_pii_redaction_scope(scope, model_sees, client_gets, gateway_factory, fake_upstream, tmp_path):
    record = tmp_path / "upstream-requests.jsonl"
    samples = tmp_path / "samples"
    url = fake_upstream("pii", "--record", str(record))
    sampling = {"rate": 1.0, "destination": {"local": {"path": str(samples)}}, "flushIntervalSeconds": 0.2}
    gw = gateway_factory(single(url, piiRedaction={"scope": scope}, payloadSampling=sampling), name=scope)
    prompt = "I am ann@example.org"
    answer = gw.client().completions.create(model=MODEL, prompt=prompt).choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in gw.client().completions.create(model=MODEL, prompt=prompt, stream=True)
        if c.choices
    )
    redacted_answer = "Mail [EMAIL] or call [PHONE]; card [CARD]."
    assert answer == streamed == (PII_TEXT if client_gets == "raw" else redacted_answer)
    sent = [row["prompt"] for _, row in jsonl.read_path(record)]
    assert sent == [prompt if model_sees == "raw" else "I am [EMAIL]"] * 2

    def stored() -> str:
        return "".join(p.read_text() for p in samples.rglob("*.jsonl")) if samples.exists() else ""

    eventually(lambda: stored().count("\n") >= 2, timeout=10)
    records = [row for _, row in jsonl.read(stored(), "samples")]
    assert all(r["request"]["prompt"] == "I am [EMAIL]" for r in records)  # stored: always redacted
    assert all(r["completions"] == [redacted_answer] for r in records)


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


def test_prometheus_scrapes_gateway_and_vllm(vllm_server, gateway_factory, tmp_path):
    gw = gateway_factory(single(vllm_server.url))
    client = gw.client()
    for _ in range(3):
        client.completions.create(
            model=MODEL, prompt="The garden needs water", max_tokens=4, extra_body=NO_EOS
        )
    list(client.completions.create(model=MODEL, prompt="x", max_tokens=4, stream=True, extra_body=NO_EOS))

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    static_configs: [{{targets: ['127.0.0.1:{gw.port}']}}]\n"
        f"  - job_name: vllm\n    static_configs: [{{targets: ['127.0.0.1:{vllm_server.port}']}}]\n"
    )
    with open(tmp_path / "prometheus.log", "w") as log:
        prom = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def query(q: str) -> list[dict]:
            status, text = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            return json.loads(text)["data"]["result"] if status == 200 else []

        up = eventually(lambda: len(query("up == 1")) == 2 and query("up == 1"), timeout=60)
        assert {r["metric"]["job"] for r in up} == {"gateway", "vllm"}
        served = eventually(lambda: query('llmops_gateway_requests_total{code="200"}'), timeout=30)
        assert float(served[0]["value"][1]) == 4 and served[0]["metric"]["version"] == "1"
        assert eventually(lambda: query("llmops_gateway_completion_tokens_total"), timeout=30)
        assert eventually(lambda: query("llmops_gateway_time_to_first_token_seconds_count"), timeout=30)
        assert eventually(lambda: query("llmops_gateway_pending_requests"), timeout=30)
        # vLLM's own signals, which autoscaling reads, come through too.
        for name in (
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            "vllm:generation_tokens_total",
        ):
            assert eventually(lambda name=name: query(name), timeout=30), name
        p50 = eventually(
            lambda: query(
                "histogram_quantile(0.5, sum by (le)"
                " (rate(llmops_gateway_request_duration_seconds_bucket[1m])))"
            ),
            timeout=30,
        )
        assert p50
    finally:
        prom.terminate()
        prom.wait(30)
