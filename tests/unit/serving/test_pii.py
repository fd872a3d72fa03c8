"""PII redaction of the OpenAI shapes (serving.pii); detection itself is tested in
tests/unit/test_pii.py."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.api.modeldeployment import PiiRedaction
from llmops.pii import Detector
from llmops.serving.pii import AnswerRedactor, Redaction, redact_json

DETECTOR = Detector(regions=["US"])


SECRET = "Mail jane.doe@example.com or call (415) 555-0132; card 4111 1111 1111 1111."


REDACTED = "Mail [EMAIL] or call [PHONE]; card [CARD]."


ARGS = json.dumps(
    {"to": "jane.doe@example.com", "phone": "+1 415 555 0132", "card": 4111111111111111, "n": 3}
)


def test_tool_call_arguments_stay_valid_json():
    out = redact_json(DETECTOR, ARGS)
    assert json.loads(out) == {"to": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "n": 3}
    escaped = json.dumps({"note": "call\n(415) 555-0132 or jos\u00e9@example.com"}, ensure_ascii=True)
    assert json.loads(redact_json(DETECTOR, escaped)) == {"note": "call\n[PHONE] or [EMAIL]"}
    assert redact_json(DETECTOR, '{"a": "unterminated 415-555-0132') == '{"a": "unterminated [PHONE]'


def _chunk(index, finish=None, **delta):
    return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def _pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=150, deadline=None)
@given(
    cuts=st.lists(st.lists(st.integers(min_value=0, max_value=500), max_size=15), min_size=3, max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_a_streamed_answer_equals_the_whole_answer_redacted(cuts, order):
    """n = 2 choices, interleaved at random, with content, reasoning and tool-call arguments each split
    at random: the client gets, per choice and field, exactly the whole text redacted."""
    fields = {"content": SECRET, "reasoning_content": "think: " + SECRET}
    events = []
    for index in (0, 1):
        events.append(
            [(index, name, piece) for name, text in fields.items() for piece in _pieces(text, cuts[index])]
        )
        events[-1] += [(index, "args", piece) for piece in _pieces(ARGS, cuts[2])]
    merged = []
    while any(events):
        queue = order.choice([q for q in events if q])
        merged.append(queue.pop(0))
    answer = AnswerRedactor(DETECTOR, chat=True)
    got: dict[tuple[int, str], str] = {}
    for index, name, piece in [*merged, (0, "end", ""), (1, "end", "")]:
        if name == "end":
            chunk = _chunk(index, "stop")
        elif name == "args":
            chunk = _chunk(index, tool_calls=[{"index": 0, "function": {"arguments": piece}}])
        else:
            chunk = _chunk(index, **{name: piece})
        answer.event(chunk)
        delta = chunk["choices"][0]["delta"]
        for key in fields:
            if isinstance(delta.get(key), str):
                got[(index, key)] = got.get((index, key), "") + delta[key]
        for call in delta.get("tool_calls") or []:
            got[(index, "args")] = got.get((index, "args"), "") + call["function"]["arguments"]
    for index in (0, 1):
        for name, text in fields.items():
            assert got[(index, name)] == DETECTOR.redact(text)
        assert got[(index, "args")] == redact_json(DETECTOR, ARGS)
        assert json.loads(got[(index, "args")])["to"] == "[EMAIL]"


def test_the_issues_chunks_reach_the_client_redacted_whole():
    answer = AnswerRedactor(DETECTOR, chat=True)
    pieces = ["Call", " (", "415", ")", " 555", "-", "0132", " now"]
    out = ""
    for i, piece in enumerate(pieces):
        chunk = _chunk(0, "stop" if i == len(pieces) - 1 else None, content=piece)
        answer.event(chunk)
        out += chunk["choices"][0]["delta"]["content"]
    assert out == "Call [PHONE] now"


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=40))
def test_streamed_logprobs_spell_out_the_redacted_content(sizes):
    """One token per chunk, with its logprobs entry, as vLLM streams them: the tokens the client gets
    spell out exactly the content it gets, which is the whole text redacted."""
    tokens, i = [], 0
    while i < len(SECRET):
        n = sizes[len(tokens) % len(sizes)]
        tokens.append(SECRET[i : i + n])
        i += n
    answer = AnswerRedactor(DETECTOR, chat=True)
    content, spelled = "", []
    for k, token in enumerate(tokens):
        entry = {"token": token, "logprob": -1.0, "bytes": list(token.encode()), "top_logprobs": []}
        chunk = _chunk(0, "stop" if k == len(tokens) - 1 else None, content=token)
        chunk["choices"][0]["logprobs"] = {"content": [entry]}
        answer.event(chunk)
        content += chunk["choices"][0]["delta"]["content"]
        spelled += chunk["choices"][0]["logprobs"]["content"]
    assert content == REDACTED
    assert "".join(e["token"] for e in spelled) == REDACTED and len(spelled) == len(tokens)


def test_whole_responses_every_text_field_and_logprobs():
    red = Redaction(PiiRedaction(regions=["US"]))
    tokens = ["Call", " (", "415", ")", " 555", "-", "0132", " now"]
    chat = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "content": "".join(tokens),
                    "reasoning_content": SECRET,
                    "refusal": "no, a@example.com",
                    "tool_calls": [
                        {"id": "1", "type": "function", "function": {"name": "f", "arguments": ARGS}}
                    ],
                },
                "logprobs": {
                    "content": [
                        {
                            "token": t,
                            "logprob": -0.1,
                            "bytes": list(t.encode()),
                            "top_logprobs": [{"token": t, "logprob": -0.1, "bytes": list(t.encode())}],
                        }
                        for t in tokens
                    ]
                },
            }
        ]
    }
    assert red.response(chat, chat=True)
    message = chat["choices"][0]["message"]
    assert message["content"] == "Call [PHONE] now" and message["reasoning_content"] == REDACTED
    assert message["refusal"] == "no, [EMAIL]"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"])["phone"] == "[PHONE]"
    spelled = chat["choices"][0]["logprobs"]["content"]
    assert len(spelled) == len(tokens) and "".join(e["token"] for e in spelled) == "Call [PHONE] now"
    assert all(bytes(e["bytes"]).decode() == e["token"] for e in spelled)
    assert not any(c.isdigit() for e in spelled for alt in e["top_logprobs"] for c in alt["token"])
    completion = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "text": "".join(tokens),
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": [-0.1] * len(tokens),
                    "top_logprobs": [{t: -0.1} for t in tokens],
                    "text_offset": [0, 4, 6, 9, 10, 14, 15, 19],
                },
            }
        ]
    }
    assert red.response(completion, chat=False)
    choice = completion["choices"][0]
    assert choice["text"] == "Call [PHONE] now" and "".join(choice["logprobs"]["tokens"]) == choice["text"]
    assert choice["logprobs"]["tokens"][:3] == ["Call", " [PHONE]", ""]
    assert choice["logprobs"]["text_offset"] == [0, 4, 12, 12, 12, 12, 12, 12]
    assert not any(c.isdigit() for top in choice["logprobs"]["top_logprobs"] for t in top for c in t)


def test_every_text_of_a_request():
    red = Redaction(PiiRedaction(regions=["US"]))
    chat = {
        "messages": [
            {"role": "system", "content": SECRET},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": SECRET},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": ARGS}}],
            },
            {"role": "tool", "tool_call_id": "1", "content": SECRET},
            {"role": "assistant", "reasoning_content": SECRET, "content": "ok"},
        ]
    }
    assert red.request(chat, "chat")
    text = json.dumps(chat)
    for secret in ("jane.doe", "415", "4111"):
        assert secret not in text
    assert json.loads(chat["messages"][2]["tool_calls"][0]["function"]["arguments"])["card"] == "[CARD]"
    completions = {"prompt": [SECRET, "plain"], "suffix": SECRET}
    assert red.request(completions, "completions")
    assert completions == {"prompt": [REDACTED, "plain"], "suffix": REDACTED}
    assert not red.request({"prompt": [1, 2, 3]}, "completions")  # token ids: nothing to read
    embeddings = {"input": [SECRET]}
    assert red.request(embeddings, "embeddings") and embeddings == {"input": [REDACTED]}
    responses = {
        "instructions": SECRET,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": SECRET}]},
            {"type": "function_call", "call_id": "1", "name": "f", "arguments": ARGS},
            {"type": "function_call_output", "call_id": "1", "output": SECRET},
        ],
    }
    assert red.request(responses, "responses")
    assert "jane.doe" not in json.dumps(responses) and responses["instructions"] == REDACTED


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=15))
def test_responses_api_events_agree_with_their_done_texts(cuts):
    red = Redaction(PiiRedaction(regions=["US"])).responses_answer()
    sent: list[dict] = []
    for family, whole, field in (
        ("response.output_text", SECRET, "text"),
        ("response.function_call_arguments", ARGS, "arguments"),
    ):
        for piece in _pieces(whole, cuts):
            sent += red.event(
                {"type": f"{family}.delta", "output_index": 0, "content_index": 0, "delta": piece}
            )
        sent += red.event({"type": f"{family}.done", "output_index": 0, "content_index": 0, field: whole})
        deltas = "".join(e["delta"] for e in sent if e["type"] == f"{family}.delta")
        done = next(e for e in sent if e["type"] == f"{family}.done")[field]
        assert deltas == done == (redact_json(DETECTOR, whole) if field == "arguments" else REDACTED)
    completed = {
        "type": "response.completed",
        "response": {
            "output": [
                {"type": "message", "content": [{"type": "output_text", "text": SECRET}]},
                {"type": "function_call", "arguments": ARGS},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": SECRET}]},
            ]
        },
    }
    (event,) = red.event(completed)
    assert "jane.doe" not in json.dumps(event) and "4111" not in json.dumps(event)


@pytest.mark.parametrize(
    ("scope", "prompts", "answers"),
    [("stored", False, False), ("prompts", True, False), ("promptsAndAnswers", True, True)],
)
def test_the_scope_decides_the_directions(scope, prompts, answers):
    red = Redaction(PiiRedaction(scope=scope))
    assert (red.prompts, red.answers) == (prompts, answers)
    assert PiiRedaction().scope == "promptsAndAnswers"  # the default
