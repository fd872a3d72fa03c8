"""The OpenAI wire format as the gateway handles it (serving.openai): request checks, the body sent
upstream, stream events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmops.api.modeldeployment import PiiRedaction
from llmops.pii import Detector
from llmops.serving.endpoints import prompt_texts
from llmops.serving.openai import (
    USAGE_OR_DONE,
    HttpError,
    StreamState,
    ask_for_usage,
    check_request,
    flat_usage,
    forwarded_body,
    redaction_endpoint,
    relay,
    usage_or_done_at,
    validate,
)
from llmops.serving.pii import AnswerRedactor, Redaction

DETECTOR = Detector(regions=["US"])


def test_validate_requests():
    names = {"m"}
    validate({"model": "m", "prompt": "x"}, False, names)
    validate({"model": "m", "prompt": [1, 2, 3]}, False, names)
    validate({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, True, names)
    bad = [
        ("x", False, 400),
        ({"model": "other", "prompt": "x"}, False, 404),
        ({"model": "m", "prompt": [1, "a"]}, False, 400),
        ({"model": "m", "prompt": []}, False, 400),
        ({"model": "m", "messages": []}, True, 400),
        ({"model": "m", "prompt": "x", "n": True}, False, 400),
    ]
    for body, chat, status in bad:
        with pytest.raises(HttpError) as err:
            validate(body, chat, names)
        assert err.value.status == status


def _sse(obj) -> bytes:
    return json.dumps(obj).encode()


def test_stream_state_strips_the_injected_usage_chunk_and_counts():
    state = StreamState(None, collect=True, strip_usage=True)
    first = _sse({"choices": [{"index": 0, "text": "Hel"}]})
    assert state.transform(first, chat=False) == first  # untouched bytes when nothing changes
    assert state.first_token_at is not None
    usage = _sse({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})
    assert state.transform(usage, chat=False) is None  # the client did not ask for it
    assert state.usage == {"prompt_tokens": 2, "completion_tokens": 3}
    assert state.transform(b"[DONE]", chat=False) == b"[DONE]" and state.done
    assert state.texts == {0: ["Hel"]}


def test_stream_state_redacts_chat_deltas_across_chunks():
    state = StreamState(AnswerRedactor(DETECTOR, chat=True), collect=False, strip_usage=False)
    pieces = ["mail jo", "hn@exam", "ple.com", " now"]
    out = []
    for i, piece in enumerate(pieces):
        finish = "stop" if i == len(pieces) - 1 else None
        data = state.transform(
            _sse({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]}), True
        )
        out.append(json.loads(data)["choices"][0]["delta"]["content"])
    assert "".join(out) == "mail [EMAIL] now"


def test_forwarded_body_keeps_the_clients_bytes_or_splices_usage():
    raw = b' {"model": "m", "prompt": "a long prompt", "stream": true}'
    body = json.loads(raw)
    assert forwarded_body(raw, body, changed=False, add_usage=False) is raw  # untouched: no re-encoding
    spliced = forwarded_body(raw, body, changed=False, add_usage=True)
    assert json.loads(spliced) == {**body, "stream_options": {"include_usage": True}}
    assert spliced.count(b"stream_options") == 1
    body["prompt"] = "[REDACTED]"  # a changed body (PII redaction) is re-encoded
    assert json.loads(forwarded_body(raw, body, changed=True, add_usage=False))["prompt"] == "[REDACTED]"
    utf16 = json.dumps({"model": "m"}).encode("utf-16")  # json.loads accepts it; splicing bytes would not
    assert json.loads(forwarded_body(utf16, {"model": "m"}, changed=False, add_usage=True)) == {"model": "m"}


@pytest.mark.parametrize(
    ("event", "parse"),
    [
        (b'data: {"choices":[{"text":"a"}]}', False),
        (b'data: {"choices":[{"text":"a"}],"usage":null}', False),  # OpenAI's form: nothing to count
        (b'data: {"choices":[],"usage": {"prompt_tokens":1}}', True),
        (b"data: [DONE]", True),
    ],
)
def test_only_usage_and_done_events_are_parsed_on_the_fast_path(event, parse):
    assert bool(USAGE_OR_DONE.search(event)) is parse
    assert (usage_or_done_at(event) >= 0) is parse


@given(
    st.lists(
        st.sampled_from(['"usage"', ":", " ", "\n", "{", "null", "[DONE]", "data: ", "x", "["]), max_size=12
    )
)
def test_usage_or_done_at_finds_what_the_expression_matches(parts):
    data = "".join(parts).encode()
    match = USAGE_OR_DONE.search(data)
    assert usage_or_done_at(data) == (match.start() if match else -1)


def test_check_request_per_endpoint():
    names = {"m"}
    good = [
        ({"model": "m", "input": "x", "stream": True}, "responses"),
        ({"model": "m", "input": [{"role": "user", "content": "x"}]}, "responses"),
        ({"model": "m", "input": ["a", "b"]}, "embeddings"),
        ({"model": "m", "input": [[1, 2], [3]]}, "embeddings"),
        ({"prompt": "x"}, "tokenize"),  # vLLM's tokenize needs no model
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "tokenize"),
        ({"tokens": [1, 2]}, "detokenize"),
    ]
    for body, kind in good:
        check_request(body, kind, names)
    bad = [
        ({"model": "m"}, "responses", 400, "'input'"),
        ({"model": "m", "input": ["x"]}, "responses", 400, "input[0]"),
        ({"model": "m", "input": "x", "max_output_tokens": -1}, "responses", 400, "'max_output_tokens'"),
        ({"model": "m", "input": [1, "a"]}, "embeddings", 400, "'input'"),
        ({"model": "m", "input": "x", "stream": True}, "embeddings", 400, "'stream'"),
        ({"input": "x"}, "embeddings", 400, "'model'"),
        ({"model": "other", "prompt": "x"}, "tokenize", 404, "other"),
        ({"model": "m"}, "tokenize", 400, "'prompt'"),
        ({"tokens": [1, True]}, "detokenize", 400, "'tokens'"),
    ]
    for body, kind, status, field in bad:
        with pytest.raises(HttpError) as err:
            check_request(body, kind, names)
        assert err.value.status == status and field in err.value.message, (body, err.value.message)


def test_prompt_texts_and_redaction_of_every_endpoint():
    redaction = Redaction(PiiRedaction(scope="prompts", entities=["email"]))

    mail = "write to a.b@example.com"
    bodies = {
        "responses": {
            "model": "m",
            "instructions": mail,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": mail}]}],
        },
        "embeddings": {"model": "m", "input": [mail, mail]},
        "tokenize": {"prompt": mail},
        "chat": {"model": "m", "messages": [{"role": "user", "content": mail}]},
    }
    for kind, body in bodies.items():
        assert prompt_texts(body, kind) == [mail, mail] if kind in ("responses", "embeddings") else [mail]
        redaction.request(body, redaction_endpoint(body, kind))
        assert prompt_texts(body, kind) and all(t == "write to [EMAIL]" for t in prompt_texts(body, kind))
    assert prompt_texts({"tokens": [1]}, "detokenize") == []


def test_flat_usage_of_a_whole_answer():
    usage = {"prompt_tokens": 3, "total_tokens": 8, "completion_tokens": 5, "prompt_tokens_details": None}
    text = 'He said "usage": {"x": 1}'  # in the text, the quotes are escaped: never a match
    answer = {"id": "c", "choices": [{"index": 0, "text": text}], "usage": usage}
    assert flat_usage(json.dumps(answer).encode()) == usage
    nested = {**answer, "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 0}}}
    assert flat_usage(json.dumps(nested).encode()) == nested["usage"]
    inner = {"choices": [{"index": 0, "text": "x", "usage": usage}]}  # only the top level's counts
    assert flat_usage(json.dumps(inner).encode()) is None
    assert flat_usage(json.dumps({"choices": []}).encode()) is None
    # Not a JSON object, or a usage that is not an object: None, and the caller parses it all.
    for payload in (b'{"usage": {"prompt_tokens": 1}', b"[]", b'{"usage": [1]}', b"\xff"):
        assert flat_usage(payload) is None


def test_ask_for_usage_only_where_the_client_did_not():
    body = {"model": "m", "prompt": "x", "stream": True}
    assert ask_for_usage(body, "completions") == (True, True)  # no stream_options: spliced into the bytes
    assert body["stream_options"] == {"include_usage": True}
    body = {"model": "m", "prompt": "x", "stream": True, "stream_options": {"continuous_usage_stats": True}}
    assert ask_for_usage(body, "chat") == (True, False)  # re-encoded, the client's options kept
    assert body["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
    asked = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    assert ask_for_usage(asked, "chat") == (False, False)  # the client gets its usage chunk
    for body, kind in (({"model": "m", "stream": False}, "chat"), ({"stream": True}, "responses")):
        assert ask_for_usage(body, kind) == (False, False) and "stream_options" not in body


@given(
    st.lists(
        st.sampled_from(
            [
                b'data: {"choices":[{"text":""}]}',
                b'data: {"choices":[{"delta":{"content":""}}]}',
                b'data: {"choices":[{"text":"a"}]}',
                b"",
                b"\n",
            ]
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_first_token_on_the_fast_path_is_the_first_event_with_text(events, done):
    """The fast path marks the first token if an event before [DONE] is not empty and not an empty
    text (the definition, event by event, on the buffer split at blank lines)."""
    text = b"".join(e + b"\n\n" for e in events)
    state = StreamState(None, False, True)
    relay(text + (b"data: [DONE]\n\n" if done else b""), state, False, False)
    expected = any(e and b'"content":""' not in e and b'"text":""' not in e for e in text.split(b"\n\n"))
    print("events", len(events), "[DONE]", done, "first token marked", state.first_token_at is not None)
    assert (state.first_token_at is not None) is expected


def test_prompt_logprobs_are_refused_where_the_replicas_run_lora_and_only_there():
    """Every way a completions or chat body asks vLLM for prompt logprobs (vLLM's own rule:
    `prompt_logprobs`, else `echo` with `logprobs` / `top_logprobs`) is a 400 naming the field when the
    replicas run with LoRA on (they take its engine down: serving.endpoints.PROMPT_LOGPROBS_WITH_LORA),
    and passes where they do not; logprobs of generated tokens pass everywhere."""
    names = {"m"}
    prompt = {"model": "m", "prompt": "x"}
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    asking = [
        ({**prompt, "echo": True, "logprobs": 1}, "completions", "echo"),
        ({**prompt, "echo": True, "logprobs": 0}, "completions", "echo"),
        ({**prompt, "echo": True, "logprobs": 5, "max_tokens": 0}, "completions", "echo"),
        ({**prompt, "prompt_logprobs": 0}, "completions", "prompt_logprobs"),
        ({**prompt, "prompt_logprobs": 1, "echo": True, "logprobs": 1}, "completions", "prompt_logprobs"),
        ({**prompt, "prompt_logprobs": -1}, "completions", "prompt_logprobs"),
        ({**chat, "prompt_logprobs": 2}, "chat", "prompt_logprobs"),
        ({**chat, "echo": True, "logprobs": True, "top_logprobs": 0}, "chat", "echo"),
        ({**chat, "echo": True, "top_logprobs": 3, "stream": True}, "chat", "echo"),
        ({**chat, "echo": True}, "chat", "echo"),  # top_logprobs defaults to 0 in vLLM's chat request
        ({**chat, "echo": True, "logprobs": False}, "chat", "echo"),
    ]
    for body, kind, field in asking:
        check_request(body, kind, names)  # no LoRA: vLLM serves them
        with pytest.raises(HttpError) as err:
            check_request(body, kind, names, lora=True)
        assert err.value.status == 400 and err.value.param == field, (body, err.value.param)
        assert "LoRA" in err.value.message and "16668" in err.value.message
        assert err.value.message.startswith(f"'{field}' asks for prompt logprobs"), err.value.message
        if kind == "chat" and field == "echo":  # the default that makes a bare echo ask is named
            assert "send 'top_logprobs': null with 'echo'" in err.value.message
    fine = [
        ({**prompt, "logprobs": 5}, "completions"),
        ({**prompt, "echo": True}, "completions"),
        ({**prompt, "echo": True, "logprobs": None, "prompt_logprobs": None}, "completions"),
        ({**prompt, "echo": False, "logprobs": 1}, "completions"),
        ({**chat, "logprobs": True, "top_logprobs": 5}, "chat"),
        ({**chat, "echo": True, "top_logprobs": None}, "chat"),
        ({**chat, "echo": False, "top_logprobs": 3, "logprobs": True}, "chat"),
        ({"model": "m", "input": "x", "prompt_logprobs": 1}, "responses"),  # not a Responses field
        ({"model": "m", "input": "x"}, "embeddings"),
    ]
    for body, kind in fine:
        check_request(body, kind, names, lora=True)
