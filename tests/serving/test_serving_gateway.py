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
ADAPTER = "tiny-lora"  # the LoRA adapter the session's vLLM serves beside MODEL (conftest.py)
EMBED = "tiny-embed"  # the model name of the embedding vLLM (conftest.py)
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


# A client that goes away stops the work it started ------------------------------------------------


def send_raw(port: int, path: str, body: dict, request_id: str) -> socket.socket:
    """Send one request on a raw socket and return it unread: the test hangs up when it chooses."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nX-Request-Id: {request_id}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def upstream_events(path) -> list[tuple[str, str]]:
    """(event, request id) lines that fake_upstream.py --mode hang wrote."""
    if not path.exists():
        return []
    return [(e["event"], e["id"]) for e in map(json.loads, path.read_text().splitlines())]


def logged(gw, **fields) -> list[dict]:
    """The gateway's JSON log lines that have all of `fields`."""
    lines = [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if all(line.get(k) == v for k, v in fields.items())]


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
    eventually(lambda: (mark, "r1") in upstream_events(events), timeout=30, interval=0.05)
    if hang_at == "body" and stream:  # the first event reached the client: the gateway is relaying
        assert b"data: " in sock.recv(65536)
    sock.close()
    eventually(lambda: ("closed", "r1") in upstream_events(events), timeout=30, interval=0.05)
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
        eventually(lambda: ("start", "busy") in upstream_events(events), timeout=30, interval=0.05)
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
        eventually(lambda: ("closed", "busy") in upstream_events(events), timeout=30, interval=0.05)
        after = send_raw(gw.port, "/v1/completions", {"model": MODEL, "prompt": "x"}, "after")
        eventually(lambda: ("start", "after") in upstream_events(events), timeout=30, interval=0.05)
        after.close()
        eventually(lambda: ("closed", "after") in upstream_events(events), timeout=30, interval=0.05)
        assert [rid for event, rid in upstream_events(events) if event == "start"] == ["busy", "after"]
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
        # Choices of 240 tokens each: seconds of work for the tiny model on the CPU. The plain request
        # is closed only once the gateway has sent it, so it gets more work, to outlast that wait.
        n = 64 if stream else 256
        before = vllm_metrics()
        body = {"model": MODEL, "prompt": "Once", "max_tokens": 240, "n": n, "stream": stream, **NO_EOS}
        sock = send_raw(gw.port, "/v1/completions", body, f"abort-{i}")
        if stream:
            got = b""
            while got.count(b"data: ") < 2:
                got += sock.recv(65536)
        else:  # the gateway has sent it to vLLM (vLLM's own /metrics can answer late while it works)
            eventually(lambda: gw.value("llmops_gateway_inflight_requests", version="1") == 1, timeout=60)
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


# What vLLM says about its models, and the rest of its OpenAI surface ------------------------------


def test_models_pass_through_what_vllm_reports(vllm_server, gateway_factory):
    """GET /v1/models through the gateway is vLLM's answer: every field, the LoRA adapter with its base
    as `parent`; merged across two versions (both this one vLLM here) without duplicates."""
    _, text = http_get(f"{vllm_server.url}/v1/models")
    direct = {card["id"]: card for card in json.loads(text)["data"]}
    assert direct[ADAPTER]["parent"] == MODEL and direct[MODEL]["max_model_len"] == 256

    upstreams = [
        {"version": "1", "role": "stable", "weight": 90, "replicas": [vllm_server.url]},
        {"version": "2", "role": "canary", "weight": 10, "replicas": [vllm_server.url]},
    ]
    gw = gateway_factory({"servedModelName": MODEL, "extraModelNames": [ADAPTER], "upstreams": upstreams})
    models = gw.client().models.list().data
    assert [m.id for m in models] == [MODEL, ADAPTER]
    volatile = ("created", "permission")  # vLLM stamps these afresh on every call
    for m in models:
        card = m.model_dump(exclude_unset=True)  # what the gateway sent, no SDK defaults
        want = direct[m.id]
        assert card.keys() == want.keys()
        for field in want.keys() - set(volatile):
            if not (m.id == ADAPTER and field == "max_model_len"):
                assert card[field] == want[field], field
        assert isinstance(card["created"], int)
        assert [sorted(p) for p in card["permission"]] == [sorted(p) for p in want["permission"]]
    base, adapter = models
    assert (base.owned_by, base.root, base.parent) == ("vllm", direct[MODEL]["root"], None)
    assert (adapter.parent, adapter.root) == (MODEL, direct[ADAPTER]["root"])
    # vLLM lists an adapter with max_model_len null; it runs within its base's context length.
    assert direct[ADAPTER]["max_model_len"] is None and adapter.max_model_len == 256

    # The adapter is served through the gateway by its name.
    done = gw.client().completions.create(
        model=ADAPTER, prompt="The river ran", max_tokens=4, extra_body=NO_EOS
    )
    assert done.model == ADAPTER and done.usage.completion_tokens == 4

    # A name the gateway does not accept is not listed, even if a replica serves it.
    only_base = gateway_factory(single(vllm_server.url), name="base-only")
    assert [m.id for m in only_base.client().models.list()] == [MODEL]


def test_responses_api_plain_and_streamed(vllm_server, gateway_factory):
    """/v1/responses through the gateway with the openai client: a whole answer, and a stream of typed
    events in vLLM's order, ending with response.completed; tokens, TTFT and codes in the metrics."""
    gw = gateway_factory(single(vllm_server.url))
    client = gw.client()
    answer = client.responses.create(
        model=MODEL, input="Tell me about the river", max_output_tokens=8, extra_body={**NO_EOS, "seed": 7}
    )
    assert answer.output_text and answer.usage.output_tokens == 8

    ask = {"model": MODEL, "input": [{"role": "user", "content": "Hi"}], "max_output_tokens": 5}
    events = list(client.responses.create(**ask, stream=True, extra_body={**NO_EOS, "seed": 7}))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))  # none lost, none added
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    (done,) = [e for e in events if e.type == "response.output_text.done"]
    assert deltas and deltas == done.text and events[-1].response.usage.output_tokens == 5

    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 2
    assert gw.value("llmops_gateway_completion_tokens_total", version="1") == 8 + 5
    assert gw.value("llmops_gateway_prompt_tokens_total", version="1") > 0
    assert gw.value("llmops_gateway_time_to_first_token_seconds_count", version="1") == 1
    assert logged(gw, code=200, endpoint="responses")


def test_tokenize_and_detokenize(vllm_server, gateway_factory):
    """/tokenize and /detokenize (vLLM's, at the root) through the gateway, with the openai client's
    generic `post`; the round trip gives back the text."""
    import openai

    gw = gateway_factory(single(vllm_server.url))
    root = openai.OpenAI(base_url=gw.url, api_key="none", max_retries=0)
    tokens = root.post("/tokenize", body={"model": MODEL, "prompt": "The river ran low"}, cast_to=object)
    assert tokens["count"] == len(tokens["tokens"]) > 0 and tokens["max_model_len"] == 256
    chat = root.post(
        "/tokenize",
        body={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True},
        cast_to=object,
    )
    assert chat["count"] > 0
    text = root.post("/detokenize", body={"model": MODEL, "tokens": tokens["tokens"]}, cast_to=object)
    assert text["prompt"].endswith("The river ran low")
    status, _, body = post(f"{gw.url}/detokenize", {"model": MODEL, "tokens": "abc"})
    assert status == 400 and "'tokens'" in body["error"]["message"]
    status, _, body = post(f"{gw.url}/tokenize", {"model": "other", "prompt": "x"})
    assert status == 404
    assert gw.value("llmops_gateway_requests_total", version="1", code="200") == 3


def test_embeddings(vllm_embedding_server, gateway_factory):
    """/v1/embeddings through the gateway against a vLLM that serves the tiny model as an embedding
    model (`--runner pooling --convert embed`), with the openai client; prompt tokens are counted."""
    gw = gateway_factory(
        {"servedModelName": EMBED, "upstreams": [{"version": "1", "replicas": [vllm_embedding_server.url]}]}
    )
    client = gw.client()
    out = client.embeddings.create(model=EMBED, input=["The river ran low", "A cup of tea"])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 128 and out.usage.prompt_tokens > 0
    single_input = client.embeddings.create(model=EMBED, input="Hello", encoding_format="float")
    assert len(single_input.data) == 1
    assert gw.value("llmops_gateway_prompt_tokens_total", version="1") == (
        out.usage.prompt_tokens + single_input.usage.prompt_tokens
    )
    assert [m.id for m in client.models.list()] == [EMBED]
    status, _, body = post(f"{gw.url}/v1/embeddings", {"model": EMBED, "input": [{"a": 1}]})
    assert status == 400 and "'input'" in body["error"]["message"]


def test_new_endpoints_share_auth_limits_redaction_and_sampling(vllm_server, gateway_factory, tmp_path):
    """/v1/responses, /v1/embeddings, /tokenize and /detokenize pass the same API keys, rate limits,
    PII redaction (prompts and answers: the model sees the redacted prompt) and sampling as chat."""
    import openai

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "team-a").write_text("sk-alpha-0123456789")
    samples = tmp_path / "samples"
    sampling = {"rate": 1.0, "destination": {"local": {"path": str(samples)}}, "flushIntervalSeconds": 0.2}
    gw = gateway_factory(
        single(
            vllm_server.url,
            apiKeysPath=str(keys),
            piiRedaction={"scope": "promptsAndAnswers"},
            payloadSampling=sampling,
            rateLimit={"requestsPerMinute": 6, "burst": 5},
        )
    )
    for path in ("/v1/responses", "/v1/embeddings", "/tokenize", "/detokenize"):
        status, _, body = post(
            f"{gw.url}{path}", {"model": MODEL, "input": "x", "prompt": "x", "tokens": [1]}
        )
        assert status == 401 and body["error"]["type"] == "authentication_error", path

    secret = "Mail jane.roe@example.org today"
    client = gw.client("sk-alpha-0123456789")
    root = openai.OpenAI(base_url=gw.url, api_key="sk-alpha-0123456789", max_retries=0)
    tokens = root.post("/tokenize", body={"model": MODEL, "prompt": secret}, cast_to=object)["tokens"]
    req = urllib.request.Request(  # what the model was given, read back at vLLM
        f"{vllm_server.url}/detokenize",
        data=json.dumps({"model": MODEL, "tokens": tokens}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        seen = json.loads(r.read())["prompt"]
    assert "[EMAIL]" in seen and "jane.roe" not in seen

    answer = client.responses.create(model=MODEL, input=secret, max_output_tokens=4)
    assert answer.output_text is not None
    # Streamed typed events are redacted too (tests/unit/serving/test_endpoints.py splits the text).
    events = list(client.responses.create(model=MODEL, input=secret, max_output_tokens=2, stream=True))
    assert events[-1].type == "response.completed"
    root.post("/detokenize", body={"model": MODEL, "tokens": tokens}, cast_to=object)
    # The burst of 5 is spent (tokenize, responses, the stream, detokenize ... and this one).
    codes = []
    for _ in range(3):
        try:
            root.post("/tokenize", body={"model": MODEL, "prompt": "x"}, cast_to=object)
            codes.append(200)
        except openai.RateLimitError:
            codes.append(429)
    assert 429 in codes

    def stored() -> list[dict]:
        files = samples.rglob("*.jsonl") if samples.exists() else []
        return [json.loads(line) for f in files for line in f.read_text().splitlines()]

    eventually(
        lambda: {"tokenize", "responses", "detokenize"} <= {r["endpoint"] for r in stored()}, timeout=10
    )
    assert "jane.roe" not in json.dumps(stored())
