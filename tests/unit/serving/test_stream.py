"""Whole answers on their way back (serving.stream): usage, texts and redaction, without a replica."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from llmops.api.modeldeployment import PiiRedaction
from llmops.serving.metrics import Metrics
from llmops.serving.pii import Redaction
from llmops.serving.stream import Relay

MAIL = "write to a.b@example.com"
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def _relay(redact: bool) -> Relay:
    answers = Redaction(PiiRedaction(scope="promptsAndAnswers", entities=["email"])) if redact else None
    return Relay(answers, Metrics(CollectorRegistry()))


def test_finish_plain_counts_collects_and_redacts():
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": MAIL}}], "usage": USAGE}
    raw = json.dumps(answer).encode()
    payload, usage, texts = _relay(False).finish_plain(raw, chat=True, sampled=True)
    assert (payload, usage, texts) == (raw, USAGE, [MAIL])  # untouched bytes
    assert _relay(False).finish_plain(raw, chat=True, sampled=False)[2] is None
    payload, usage, texts = _relay(True).finish_plain(raw, chat=True, sampled=True)
    assert json.loads(payload)["choices"][0]["message"]["content"] == "write to [EMAIL]"
    assert usage == USAGE and texts == ["write to [EMAIL]"]
    assert _relay(True).finish_plain(b"not json", chat=False, sampled=True) == (b"not json", None, None)


def test_finish_other_per_endpoint():
    embeddings = json.dumps(
        {"data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 4, "total_tokens": 4}}
    )
    payload, usage, texts = _relay(False).finish_other(embeddings.encode(), "embeddings", sampled=False)
    assert usage == {"prompt_tokens": 4, "completion_tokens": 0} and texts is None
    tokens = b'{"tokens": [1, 2], "count": 2}'
    assert _relay(True).finish_other(tokens, "tokenize", sampled=True) == (tokens, None, None)
    payload, usage, texts = _relay(True).finish_other(
        json.dumps({"prompt": MAIL}).encode(), "detokenize", sampled=True
    )
    assert json.loads(payload) == {"prompt": "write to [EMAIL]"} and texts == ["write to [EMAIL]"]
