"""What the gateway knows of each endpoint (serving.endpoints): /v1/responses streams and the merged
/v1/models."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.api.modeldeployment import PiiRedaction
from llmops.serving.endpoints import ResponsesStream, merge_model_cards
from llmops.serving.pii import Redaction


def _sse(obj) -> bytes:
    return json.dumps(obj).encode()


def test_responses_stream_state():
    state = ResponsesStream(collect=True)
    created = _sse({"type": "response.created", "response": {"usage": None}})
    assert state.transform(created) == created and not state.done and state.first_token_at is None
    state.transform(_sse({"type": "response.output_text.delta", "output_index": 0, "delta": "Hel"}))
    state.transform(_sse({"type": "response.output_text.delta", "output_index": 0, "delta": "lo"}))
    assert state.first_token_at is not None and state.texts == {0: ["Hel", "lo"]}
    usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    state.transform(_sse({"type": "response.completed", "response": {"usage": usage}}))
    assert state.done and state.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_merge_model_cards():
    def card(name, root, length, parent=None, **extra):
        return {"id": name, "object": "model", "owned_by": "vllm", "root": root, "parent": parent,
                "max_model_len": length, **extra}  # fmt: skip

    stable = [card("m", "/v3", 8192, created=3), card("m-sql", "/v3/sql", None, parent="m")]
    canary = [card("m", "/v4", 4096, created=4), card("m-new", "/v4/new", None, parent="m")]
    idle = [card("m", "/v2", 1024)]  # a version at weight 0 takes no traffic
    merged = merge_model_cards(
        [("canary", 10, canary), ("previous", 0, idle), ("stable", 90, stable)], {"m", "m-sql", "m-new"}
    )
    assert [c["id"] for c in merged] == ["m", "m-sql", "m-new"]
    base, sql, new = merged
    # The stable version's card, but the smallest context any version with traffic has.
    assert (base["root"], base["created"], base["max_model_len"]) == ("/v3", 3, 4096)
    assert (sql["parent"], sql["root"], sql["max_model_len"]) == ("m", "/v3/sql", 4096)
    assert (new["parent"], new["root"]) == ("m", "/v4/new")
    assert merge_model_cards([("stable", 100, stable)], {"m"}) == [card("m", "/v3", 8192, created=3)]
    assert stable[0]["max_model_len"] == 8192  # the replicas' lists are not changed in place


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=12))
def test_streamed_responses_events_are_redacted_like_the_whole_text(sizes):
    """/v1/responses typed events, text split anywhere: the deltas joined equal the done text, which
    is the whole text redacted; every event keeps its `event:` name."""
    text = "Call (555) 123-4567 or mail jane.roe@example.org now"
    redaction = Redaction(PiiRedaction(scope="promptsAndAnswers"))
    state = ResponsesStream(collect=True, redactor=redaction.responses_answer())
    cuts, at = [], 0
    for size in sizes:
        cuts.append(text[at : at + size])
        at += size
    cuts.append(text[at:])

    def event(obj: dict) -> bytes:
        return b"event: " + obj["type"].encode() + b"\ndata: " + json.dumps(obj).encode()

    out = []
    for piece in filter(None, cuts):
        delta = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": piece}
        out.append(state.transform_event(event(delta)))
    done = {"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": text}
    out.append(state.transform_event(event(done)))
    events = [e for chunk in out for e in chunk.split(b"\n\n") if e]
    parsed = []
    for e in events:
        name, data = e.split(b"\n")
        obj = json.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + obj["type"].encode()
        parsed.append(obj)
    deltas = "".join(o["delta"] for o in parsed if o["type"].endswith(".delta"))
    whole = redaction.text(text)
    assert deltas == whole and parsed[-1]["text"] == whole
    assert "555" not in deltas and "jane.roe" not in deltas


def test_parse_body_is_strict_and_names_the_field():
    import pytest

    from llmops.serving.endpoints import MAX_DEPTH, BadRequest, parse_body, validate_request

    assert parse_body(b'{"model": "m", "prompt": "h\\u00e9"}') == {"model": "m", "prompt": "hé"}
    cases = {
        b'{"temperature": NaN}': None,
        b'{"temperature": 1e999}': "temperature",
        b'{"seed": 18446744073709551616}': "seed",
        b'{"user": "\\ud800"}': "user",
        b'{"a": {"b": ["\\udfff"]}}': "a.b[0]",
        b'{"x": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}": "x" + "[0]" * (MAX_DEPTH - 1),
        b'{"x": ' + b"[" * 100000 + b"]" * 100000 + b"}": None,
        b'{"p": "\xff"}': None,
        "\ufeff{}".encode(): None,
    }
    for raw, param in cases.items():
        with pytest.raises(BadRequest) as err:
            parse_body(raw)
        assert err.value.param == param, (raw[:40], err.value.param)
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for field, value in [("temperature", "hot"), ("stop", [1]), ("n", 0), ("n", 1025), ("logprobs", 2)]:
        with pytest.raises(BadRequest) as err:
            validate_request({**chat, field: value}, "chat", {"m"})
        assert err.value.param == field and field in str(err.value)
    validate_request({**chat, "temperature": None, "logprobs": True, "stop": ["a"], "n": 1024}, "chat", {"m"})


def test_token_budgets_and_choice_counts_are_checked_with_the_other_fields():
    """max_tokens & co. and n & best_of are FIELD_TYPES entries: their messages, params and limits."""
    import pytest

    from llmops.serving.endpoints import MAX_CHOICES, BadRequest, validate_request

    base = {"model": "m", "prompt": "x"}
    bad = {
        "max_tokens": [-1, 1.5, True, "16"],
        "max_completion_tokens": [-1],
        "max_output_tokens": [-3],
        "n": [0, MAX_CHOICES + 1, False, 2.0],
        "best_of": [0, MAX_CHOICES + 1],
    }
    for field, values in bad.items():
        what = "a non-negative integer" if field.startswith("max_") else f"an integer from 1 to {MAX_CHOICES}"
        for value in values:
            with pytest.raises(BadRequest) as err:
                validate_request({**base, field: value}, "completions", {"m"})
            assert (str(err.value), err.value.param) == (f"'{field}' must be {what}", field)
    good = {"max_tokens": 0, "max_completion_tokens": None, "n": MAX_CHOICES, "best_of": 1}
    validate_request({**base, **good}, "completions", {"m"})


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, ascii_only=st.booleans())
def test_parse_body_reads_what_the_stdlib_reads(value, ascii_only):
    """parse_body decodes with msgspec first and the stdlib's json where msgspec refuses: the same
    values, or the same refusal, whichever decoder read it."""
    import pytest

    from llmops.serving.endpoints import BadRequest, _check_values, _parse_stdlib, parse_body

    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        expected = _parse_stdlib(raw)
        _check_values(expected)
    except BadRequest as e:
        with pytest.raises(BadRequest) as err:
            parse_body(raw)
        assert (str(err.value), err.value.param) == (str(e), e.param)
        return
    got = parse_body(raw)
    assert got == expected and json.dumps(got) == json.dumps(expected)  # -0.0 and 0.0 told apart


def test_token_counts_from_a_replica_are_counts():
    """Whatever a replica reports as usage, the counts are whole numbers >= 0 (none lowers a counter)."""
    from llmops.serving.endpoints import tokens, usage_of

    assert [tokens(v) for v in (5, 5.0, 7.9, 0, None, "12", -3, -0.5, True, float("nan"), float("inf"))] == [
        5, 5, 7, 0, 0, 0, 0, 0, 0, 0, 0,
    ]  # fmt: skip
    assert usage_of({"usage": {"prompt_tokens": -4, "completion_tokens": "x"}}, "chat") == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }
    assert usage_of({"usage": {"input_tokens": 3, "output_tokens": 2}}, "responses") == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
    }


def test_request_path_counters_never_go_down():
    """The gateway's own counters (metrics.Family) refuse a decrease as prometheus_client's do; its
    gauges go both ways; the exposition is prometheus_client's text format."""
    import pytest
    from prometheus_client import CollectorRegistry, generate_latest

    from llmops.serving.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.prompt_tokens.labels("1").inc(4)
    with pytest.raises(ValueError, match="only go up"):
        metrics.completion_tokens.labels("1").inc(-1)
    metrics.inflight.labels("1").inc()
    metrics.inflight.labels("1").dec()
    metrics.latency.labels("1").observe(0.2)
    text = generate_latest(registry).decode()
    assert 'llmops_gateway_prompt_tokens_total{version="1"} 4.0' in text
    assert 'llmops_gateway_inflight_requests{version="1"} 0.0' in text
    assert 'llmops_gateway_request_duration_seconds_count{version="1"} 1.0' in text


def test_parse_body_fast_check_agrees_at_the_limits():
    """`_sound` (what msgspec decoded) accepts exactly what `_check_values` accepts: nesting at and past
    MAX_DEPTH (arrays, objects, empty ones, lists of ids) and integers at the int64 bounds."""
    from llmops.serving.endpoints import INT64, MAX_DEPTH, BadRequest, _check_values, _sound

    def nest(depth: int, inner: object, kind: str) -> object:
        for _ in range(depth):
            inner = [inner] if kind == "list" else {"k": inner}
        return inner

    leaves = ([], {}, 1, "s", [1, 2], ["a", "b"], [1, "a"], INT64 - 1, INT64, -INT64, -INT64 - 1, [INT64])
    values = [
        nest(d, leaf, kind)
        for d in (MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH)
        for kind in ("list", "dict")
        for leaf in leaves
    ]
    for value in values:
        try:
            _check_values(value)
            ok = True
        except BadRequest:
            ok = False
        assert _sound(value, 0) == ok, value
