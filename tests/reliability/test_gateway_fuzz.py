"""Hostile input to the gateway (issue 17, point 11): malformed JSON, wrong types in every field, huge
numbers, deep nesting, invalid UTF-8, huge bodies, header floods, and slowloris-style connections.

The real gateway process (`python -m llmops.serving.gateway`) runs in front of a recording upstream
(tests/reliability/recording_upstream.py: it keeps each forwarded body's bytes; a stand-in for vLLM,
since what is checked is what would reach it). Every answer must be a 4xx (or 200 for a body that
is valid after all), or a closed connection for transport-level abuse; never a 5xx; the gateway must
still answer a normal request after; and every body it forwarded must be valid per the request
schema the gateway accepts (`forwarded_ok`, written here independently of the gateway's own checks:
strict UTF-8 JSON, no NaN/Infinity, no lone surrogates, nesting, int64, and the field types).

Hypothesis draws the bodies (`FUZZ_EXAMPLES` per strategy here; the `long` variant 10x as many).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import select
import socket
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmops.serving.endpoints import ENDPOINTS
from llmops.serving.server import MAX_HEAD, MAX_HEADERS, Limits
from tests.reliability.recording_upstream import RecordingUpstream
from tests.serving.conftest import start_gateway, stop_gateway

MODEL = "tiny"
FUZZ_EXAMPLES = 150
MAX_BODY = 1 << 20  # the gateway's maxRequestBytes in these tests

VALID: dict[str, dict[str, Any]] = {
    "completions": {"model": MODEL, "prompt": "hello", "max_tokens": 2},
    "chat": {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2},
    "responses": {"model": MODEL, "input": "hello"},
    "embeddings": {"model": MODEL, "input": ["hello"]},
    "tokenize": {"model": MODEL, "prompt": "hello"},
    "detokenize": {"model": MODEL, "tokens": [1, 2]},
}
# Every field the fuzzer puts a wrong value in: those the endpoints require, and the optional ones.
FIELDS = [
    "model", "prompt", "messages", "input", "tokens", "stream", "max_tokens", "max_completion_tokens",
    "max_output_tokens", "n", "best_of", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
    "stop_token_ids", "logprobs", "top_logprobs", "logit_bias", "user", "echo", "suffix", "tools",
    "tool_choice", "response_format", "stream_options", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "ignore_eos", "min_tokens", "dimensions", "encoding_format", "instructions",
    "unknown_field",
]  # fmt: skip

# --- what may reach the upstream, written independently of the gateway's checks --------------------

NUMBER = (int, float)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, NUMBER) and not isinstance(v, bool)


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _ints(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


TYPES = {
    "model": lambda v: isinstance(v, str) and v == MODEL,
    "stream": lambda v: isinstance(v, bool),
    "max_tokens": lambda v: _is_int(v) and v >= 0,
    "max_completion_tokens": lambda v: _is_int(v) and v >= 0,
    "max_output_tokens": lambda v: _is_int(v) and v >= 0,
    "n": lambda v: _is_int(v) and 1 <= v <= 1024,
    "best_of": lambda v: _is_int(v) and 1 <= v <= 1024,
    **{k: _num for k in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty")},
    **{k: _num for k in ("repetition_penalty",)},
    **{k: _is_int for k in ("top_k", "seed", "top_logprobs", "min_tokens", "dimensions")},
    "stop": lambda v: isinstance(v, str) or _strs(v),
    "stop_token_ids": _ints,
    "logit_bias": lambda v: isinstance(v, dict) and all(_num(x) for x in v.values()),
    **{k: lambda v: isinstance(v, str) for k in ("user", "suffix", "encoding_format", "instructions")},
    **{k: lambda v: isinstance(v, bool) for k in ("echo", "ignore_eos")},
    "tools": lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v),
    "tool_choice": lambda v: isinstance(v, (str, dict)),
    **{k: lambda v: isinstance(v, dict) for k in ("response_format", "stream_options")},
}


def _message_ok(m: Any) -> bool:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        return False
    c = m.get("content")
    return (
        c is None
        or isinstance(c, str)
        or (isinstance(c, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in c))
    )


REQUIRED = {
    "/v1/completions": lambda b: (
        isinstance(b.get("prompt"), str)
        or (isinstance(b.get("prompt"), list) and b["prompt"] and (_strs(b["prompt"]) or _ints(b["prompt"])))
    ),
    "/v1/chat/completions": lambda b: (
        isinstance(b.get("messages"), list) and b["messages"] and all(_message_ok(m) for m in b["messages"])
    ),
    "/v1/responses": lambda b: (
        isinstance(b.get("input"), str)
        or (isinstance(b.get("input"), list) and b["input"] and all(isinstance(i, dict) for i in b["input"]))
    ),
    "/v1/embeddings": lambda b: (
        isinstance(b.get("input"), str)
        or (
            isinstance(b.get("input"), list)
            and b["input"]
            and (_strs(b["input"]) or _ints(b["input"]) or all(_ints(x) for x in b["input"]))
        )
    ),
    "/tokenize": lambda b: (
        isinstance(b.get("prompt"), str)
        or (isinstance(b.get("messages"), list) and all(_message_ok(m) for m in b["messages"]))
    ),
    "/detokenize": lambda b: _ints(b.get("tokens")),
}


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _values_ok(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -(1 << 63) <= value < (1 << 63)
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, dict):
        return all(_values_ok(k, depth + 1) and _values_ok(v, depth + 1) for k, v in value.items())
    return all(_values_ok(v, depth + 1) for v in value)


def forwarded_ok(path: str, raw: bytes) -> str | None:
    """None if `raw` is a body the model server can take; else what is wrong with it."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return f"not strict UTF-8 JSON: {e}"
    if not isinstance(body, dict):
        return "not an object"
    if not _values_ok(body):
        return "a value out of range, a lone surrogate or too deep"
    if path not in ("/tokenize", "/detokenize") and body.get("model") != MODEL:
        return "model"
    if not REQUIRED[path](body):
        return "the endpoint's required field"
    for name, check in TYPES.items():
        if body.get(name) is not None and not check(body[name]):
            return f"field {name}"
    if body.get("stream") and path not in ("/v1/completions", "/v1/chat/completions", "/v1/responses"):
        return "stream on an endpoint that does not stream"
    return None


# --- the gateway and the client -----------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    upstream = RecordingUpstream().start()
    config = {
        "servedModelName": MODEL,
        "upstreams": [{"version": "1", "replicas": [upstream.url]}],
        "maxRequestBytes": MAX_BODY,
    }
    gw = start_gateway(config, tmp_path_factory.mktemp("fuzz"))
    answers: Counter[str] = Counter()
    yield gw, upstream, answers
    alive = gw.proc.poll() is None
    code = stop_gateway(gw)
    upstream.stop()
    print(f"\nfuzz answers by status: {dict(sorted(answers.items()))}; gateway alive at the end: {alive}")
    assert alive and code == 0


def send(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        try:
            obj = json.loads(data) if data else {}
        except ValueError:
            obj = {"raw": data[:200].decode("latin-1")}
        return resp.status, obj
    finally:
        conn.close()


def check(gateway, path: str, body: bytes, allow_ok: bool = True) -> int:
    gw, _, answers = gateway
    status, obj = send(gw.port, path, body)
    answers[str(status)] += 1
    assert status < 500, (status, obj, body[:300])
    if status >= 400:
        error = obj.get("error")
        assert isinstance(error, dict) and error.get("message"), obj  # the OpenAI error shape
    else:
        assert allow_ok, (status, obj, body[:300])
    return status


def forwarded_bodies_are_valid(upstream: RecordingUpstream) -> int:
    with upstream.lock:
        bodies = list(upstream.bodies)
    bad = [(path, raw[:300], why) for path, raw in bodies if (why := forwarded_ok(path, raw)) is not None]
    assert not bad, bad[:5]
    return len(bodies)


def normal_request_succeeds(gw) -> None:
    status, obj = send(gw.port, "/v1/completions", json.dumps(VALID["completions"]).encode())
    assert status == 200 and obj["choices"], obj


# --- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, 0, -1, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e"]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON as a careless or hostile client writes it: NaN and Infinity allowed, lone surrogates kept."""
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(
    "scale", [pytest.param(1, id="ci"), pytest.param(10, id="long", marks=pytest.mark.long)]
)
def test_hostile_bodies_get_4xx_and_never_reach_the_model(gateway, scale):
    gw, upstream, answers = gateway
    kinds = st.sampled_from(sorted(ENDPOINTS))
    examples = FUZZ_EXAMPLES * scale
    common = settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )

    @common
    @given(kind=kinds, value=json_values, ascii_only=st.booleans())
    def whole_bodies(kind, value, ascii_only):
        check(gateway, ENDPOINTS[kind], encode(value, ascii_only))

    @common
    @given(kind=kinds, field=st.sampled_from(FIELDS), value=json_values, ascii_only=st.booleans())
    def one_field_wrong(kind, field, value, ascii_only):
        body = {**VALID[kind], field: value}
        check(gateway, ENDPOINTS[kind], encode(body, ascii_only))

    @common
    @given(kind=kinds, data=st.binary(max_size=200))
    def raw_bytes(kind, data):
        check(gateway, ENDPOINTS[kind], data)

    @common
    @given(kind=kinds, cut=st.integers(min_value=0), junk=st.binary(min_size=1, max_size=3))
    def broken_json(kind, cut, junk):
        """A valid body cut short, or with invalid UTF-8 spliced into it."""
        raw = json.dumps(VALID[kind]).encode()
        at = cut % len(raw)
        check(gateway, ENDPOINTS[kind], raw[:at] + bytes([0xFF]) + junk + raw[at:])
        check(gateway, ENDPOINTS[kind], raw[:at])

    started = time.monotonic()
    for fuzz in (whole_bodies, one_field_wrong, raw_bytes, broken_json):
        fuzz()
    normal_request_succeeds(gw)
    forwarded = forwarded_bodies_are_valid(upstream)
    print(
        f"\nfuzzed {sum(answers.values())} requests ({examples} examples x 4 strategies) in"
        f" {time.monotonic() - started:.0f} s: answers {dict(sorted(answers.items()))};"
        f" {forwarded} bodies forwarded, every one valid"
    )


def test_huge_numbers_deep_nesting_and_huge_bodies(gateway):
    gw, upstream, _ = gateway
    chat = "/v1/chat/completions"
    base = json.dumps(VALID["chat"])[:-1]
    cases = {
        "max_tokens 1e999": base + ', "max_tokens": 1e999}',
        "temperature 1e999": base + ', "temperature": 1e999}',
        "temperature NaN": base + ', "temperature": NaN}',
        "temperature -Infinity": base + ', "temperature": -Infinity}',
        "seed 2**64": base + f', "seed": {2**64}}}',
        "n 10**9": base + ', "n": 1000000000}',
        "max_tokens 5000 digits": base + ', "max_tokens": ' + "9" * 5000 + "}",
        "logit_bias 10**30": base + ', "logit_bias": {"1": ' + "1" + "0" * 30 + "}}",
        "nested 65": base + ', "metadata": ' + "[" * 65 + "]" * 65 + "}",
        "nested 100000": base + ', "metadata": ' + "[" * 100000 + "]" * 100000 + "}",
        "nested objects 5000": base + ', "x": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}",
        "lone surrogate": base[:-1] + ', "user": "\\ud800"}',
        "UTF-16 body": json.dumps(VALID["chat"]),
        "BOM": "\ufeff" + json.dumps(VALID["chat"]),
    }
    statuses = {}
    for name, text in cases.items():
        raw = text.encode("utf-16") if name == "UTF-16 body" else text.encode()
        statuses[name] = check(gateway, chat, raw, allow_ok=False)
    # Bodies over the limit: sent whole, declared and not sent, and chunked without a length.
    big = json.dumps({**VALID["completions"], "prompt": "x" * (MAX_BODY + 10)}).encode()
    statuses["body over maxRequestBytes"] = check(gateway, "/v1/completions", big, allow_ok=False)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        statuses["Content-Length 99999999999, no body"] = int(_read_head(s).split()[1])
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        try:
            for _ in range(MAX_BODY // len(piece) + 2):
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the gateway answered and closed before the end
        statuses["chunked body over the limit"] = int(_read_head(s).split()[1])
    print(f"\nhuge numbers, nesting and bodies: {statuses}")
    for name, status in statuses.items():
        assert 400 <= status < 500, (name, status)
    assert statuses["body over maxRequestBytes"] == 413
    normal_request_succeeds(gw)
    forwarded_bodies_are_valid(upstream)


def test_error_names_the_field(gateway):
    gw, _, _ = gateway
    body = {**VALID["chat"], "temperature": "hot"}
    status, obj = send(gw.port, "/v1/chat/completions", json.dumps(body).encode())
    assert (
        status == 400 and obj["error"]["param"] == "temperature" and "temperature" in obj["error"]["message"]
    )
    body = {**VALID["chat"], "messages": [{"role": "user", "content": 5}]}
    status, obj = send(gw.port, "/v1/chat/completions", json.dumps(body).encode())
    assert status == 400 and obj["error"]["param"] == "messages[0].content", obj
    status, obj = send(gw.port, "/v1/chat/completions", base_with(', "seed": 1e999}'))
    assert status == 400 and obj["error"]["param"] == "seed", obj


def base_with(tail: str) -> bytes:
    return (json.dumps(VALID["chat"])[:-1] + tail).encode()


def _read_head(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _raw(port: int, data: bytes, trickle: float = 0.0, pieces: int = 1) -> tuple[int | None, float]:
    """Send `data` (in `pieces`, `trickle` seconds apart); (the answer's status or None if the
    connection was closed without one, seconds until then)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        step = max(1, len(data) // pieces)
        try:
            for i in range(0, len(data), step):
                if select.select([s], [], [], 0)[0]:  # answered: stop sending (or the close resets)
                    break
                s.sendall(data[i : i + step])
                if trickle:
                    time.sleep(trickle)
        except OSError:
            pass
        s.settimeout(120)
        try:
            head = _read_head(s)
        except OSError:
            head = b""
    status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else None
    return status, time.monotonic() - started


def test_header_floods_and_slowloris(gateway):
    gw, _, answers = gateway
    port = gw.port
    limits = Limits()
    start = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
    many = start + b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 50)) + b"\r\n"
    huge = start + b"X-Big: " + b"a" * (MAX_HEAD + 1000) + b"\r\n\r\n"
    endless = start + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(200))  # never ends
    body = json.dumps(VALID["completions"]).encode()
    stalled_body = start + b"Content-Length: %d\r\n\r\n" % len(body) + body[:10]
    cases = {  # name: (bytes, seconds between pieces, pieces)
        "150 header fields": (many, 0, 1),
        "one header of 65 KiB": (huge, 0.01, 40),
        "200 KiB of headers, never ending": (endless, 0.01, 100),
        # Slowloris: a head trickled a few bytes a second, never finished within header_timeout.
        "head trickled": (start + b"X-Slow: " + b"a" * 200, 1.0, 40),
        # A body that stops coming after its first bytes.
        "body stalled": (stalled_body, 0, 1),
    }
    slow = 30  # slowloris connections at once, beside the cases
    with concurrent.futures.ThreadPoolExecutor(len(cases) + slow) as pool:
        futures = {name: pool.submit(_raw, port, *case) for name, case in cases.items()}
        loris = [pool.submit(_raw, port, start + b"X-Slow: " + b"b" * 100, 1.0, 50) for _ in range(slow)]
        time.sleep(3)
        normal_request_succeeds(gw)  # the gateway serves others meanwhile
        results = {name: f.result() for name, f in futures.items()}
        loris_results = [f.result() for f in loris]
    print(
        "\nheader floods and slow clients (status, seconds):"
        f" { ({k: (s, round(t, 1)) for k, (s, t) in results.items()}) };"
        f" {slow} slowloris connections: {Counter(s for s, _ in loris_results)}, closed after"
        f" {min(t for _, t in loris_results):.0f}-{max(t for _, t in loris_results):.0f} s"
        f" (header_timeout {limits.header_timeout:g} s, body_timeout {limits.body_timeout:g} s)"
    )
    for name, (status, _) in results.items():
        answers[str(status)] += 1
        assert status is None or 400 <= status < 500, (name, status)
    assert results["150 header fields"][0] == 431
    assert results["one header of 65 KiB"][0] == 431
    assert results["head trickled"][0] == 408
    assert results["body stalled"][0] == 408
    assert all(status == 408 for status, _ in loris_results)
    assert gw.proc.poll() is None
    normal_request_succeeds(gw)
    log = gw.log.read_text()
    assert "slow headers" in log and "Traceback" not in log
