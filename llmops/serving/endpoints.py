"""What the gateway knows of each OpenAI-compatible endpoint it passes to vLLM.

- completions: POST /v1/completions; streams SSE ending with `data: [DONE]`; checks model, prompt;
  tokens from `usage` (asked for when streaming).
- chat: POST /v1/chat/completions; as completions, with messages.
- responses: POST /v1/responses; streams typed SSE events that end with `response.completed`,
  `.incomplete` or `.failed`; checks model, input; tokens from `response.usage`.
- embeddings: POST /v1/embeddings; checks model, input; tokens from `usage`.
- tokenize: POST /tokenize; checks prompt or messages (model optional); no tokens counted.
- detokenize: POST /detokenize; checks tokens (model optional); no tokens counted.

The checks here catch malformed requests before they take a queue slot, with an error naming the
field; vLLM checks the rest. Which other vLLM endpoints are not passed, and why, is in
docs/operations.md ("The gateway's API").

`merge_model_cards` builds `GET /v1/models` from what the replicas report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

ENDPOINTS: dict[str, str] = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
    "tokenize": "/tokenize",
    "detokenize": "/detokenize",
}
STREAMING = frozenset({"completions", "chat", "responses"})
# The events that end a Responses API stream (https://platform.openai.com/docs/api-reference/responses-streaming).
RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class BadRequest(ValueError):
    """A request body the gateway refuses: `status` 400 (malformed) or 404 (unknown model)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_model(body: dict[str, Any], model_names: set[str], required: bool) -> None:
    model = body.get("model")
    if model is None and not required:
        return
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string")
    if model not in model_names:
        raise BadRequest(
            f"the model {model!r} does not exist; this endpoint serves {sorted(model_names)}", 404
        )


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'")


def validate_request(body: Any, kind: str, model_names: set[str]) -> None:
    """Check the body of a request to endpoint `kind`; raises `BadRequest` naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    _check_model(body, model_names, required=kind not in ("tokenize", "detokenize"))
    if kind == "chat":
        _check_messages(body)
    elif kind == "completions":
        prompt = body.get("prompt")
        ok = isinstance(prompt, str) or (
            isinstance(prompt, list)
            and prompt
            and (all(isinstance(p, str) for p in prompt) or all(_is_int(p) for p in prompt))
        )
        if not ok:
            raise BadRequest("'prompt' is required: a string, a list of strings or of token ids")
    elif kind == "responses":
        value = body.get("input")
        if not (isinstance(value, str) or (isinstance(value, list) and value)):
            raise BadRequest("'input' is required: a string or a non-empty list of input items")
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise BadRequest(f"input[{i}] must be an object (an input item)")
    elif kind == "embeddings":
        value = body.get("input")
        ok = isinstance(value, str) or (
            isinstance(value, list)
            and value
            and (
                all(isinstance(v, str) for v in value)
                or all(_is_int(v) for v in value)
                or all(isinstance(v, list) and all(_is_int(t) for t in v) for v in value)
            )
        )
        if not ok:
            raise BadRequest(
                "'input' is required: a string, a list of strings, of token ids, or of lists of token ids"
            )
    elif kind == "tokenize":
        if "messages" in body:
            _check_messages(body)
        elif not isinstance(body.get("prompt"), str):
            raise BadRequest("'prompt' (a string) or 'messages' (a list) is required")
    elif kind == "detokenize":
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(_is_int(t) for t in tokens):
            raise BadRequest("'tokens' is required and must be a list of token ids")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be true or false")
    if body.get("stream") and kind not in STREAMING:
        raise BadRequest(f"'stream' is not supported by {ENDPOINTS[kind]}")
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens", "n"):
        value = body.get(name)
        if value is not None and (not _is_int(value) or value < 0):
            raise BadRequest(f"'{name}' must be a non-negative integer")


def _content_texts(content: Any) -> list[str]:
    """Text of a message's content: a string, or parts of type text / input_text / output_text."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def prompt_texts(body: dict[str, Any], kind: str) -> list[str]:
    """The prompt of a request as plain strings (for sampling and drift); [] where there is none."""
    if kind in ("chat", "tokenize") and isinstance(body.get("messages"), list):
        return [t for m in body["messages"] if isinstance(m, dict) for t in _content_texts(m.get("content"))]
    if kind in ("completions", "tokenize"):
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return [prompt]
        return [p for p in prompt if isinstance(p, str)] if isinstance(prompt, list) else []
    if kind == "responses":
        out = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
        value = body.get("input")
        if isinstance(value, str):
            return [*out, value]
        for item in value if isinstance(value, list) else []:
            if isinstance(item, dict):
                out += _content_texts(item.get("content"))
        return out
    if kind == "embeddings":
        value = body.get("input")
        if isinstance(value, str):
            return [value]
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
    return []


def usage_of(obj: Any, kind: str) -> dict[str, int] | None:
    """Token counts of a whole (non-streamed) answer as {prompt_tokens, completion_tokens}, or None."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    if kind == "responses":  # input_tokens / output_tokens in the Responses API
        return {
            "prompt_tokens": int(usage.get("input_tokens") or 0),
            "completion_tokens": int(usage.get("output_tokens") or 0),
        }
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


def response_texts(obj: Any, kind: str) -> list[str]:
    """The generated text of a whole answer, one string per choice / output message."""
    if not isinstance(obj, dict):
        return []
    if kind == "responses":
        out = []
        for item in obj.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "message":
                out.append("".join(_content_texts(item.get("content"))))
        return out
    if kind == "detokenize":
        return [obj["prompt"]] if isinstance(obj.get("prompt"), str) else []
    return []


class ResponsesStream:
    """What the gateway tracks of one streamed Responses API answer (typed SSE events).

    The same interface as `llmops.serving.openai.StreamState`: `transform(payload, chat)` gets each event's
    data and returns what to forward; `done`, `usage`, `first_token_at` and `texts` are read after.
    """

    def __init__(self, collect: bool, redactor: Any = None) -> None:
        self.texts: dict[int, list[str]] | None = {} if collect else None
        self.usage: dict[str, Any] | None = None
        self.first_token_at: float | None = None
        self.done = False
        self.redactor = redactor  # serving.pii.ResponsesRedactor, when answers are redacted

    def transform_event(self, event: bytes) -> bytes | None:
        """One whole SSE event (its `event:` and `data:` lines) as it is to be forwarded.

        With a redactor an event may become two: text held back while it could still be personal
        data goes out as a last `.delta` just before its `.done` event (each event named by its type).
        """
        data = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if self.redactor is None:
            out = self.transform(data)
            return event if out is data else out
        try:
            obj = json.loads(data)
        except ValueError:
            return event
        if not isinstance(obj, dict):
            return event
        events = []
        for item in self.redactor.event(obj):
            payload = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
            self.transform(payload)
            events.append(b"event: " + str(item.get("type")).encode() + b"\ndata: " + payload)
        return b"\n\n".join(events)

    def transform(self, payload: bytes, chat: bool = False) -> bytes | None:
        try:
            obj = json.loads(payload)
        except ValueError:
            return payload
        if not isinstance(obj, dict):
            return payload
        kind = obj.get("type")
        if kind == "response.output_text.delta":
            delta = obj.get("delta")
            if self.first_token_at is None and delta:
                self.first_token_at = time.perf_counter()
            if self.texts is not None and isinstance(delta, str):
                self.texts.setdefault(int(obj.get("output_index") or 0), []).append(delta)
        elif kind in RESPONSES_TERMINAL:
            self.done = True
            if isinstance(obj.get("response"), dict):
                self.usage = usage_of(obj["response"], "responses")
        return payload


# GET /v1/models ------------------------------------------------------------------------------------

ROLE_ORDER = {"stable": 0, "canary": 1, "previous": 2}


def merge_model_cards(
    reports: Iterable[tuple[str, int, list[dict[str, Any]]]], model_names: set[str]
) -> list[dict[str, Any]]:
    """One `/v1/models` list from the lists the versions' replicas reported.

    `reports`: (role, weight, the `data` list of one replica's `GET /v1/models`) per version. A model
    (or LoRA adapter) appears once, as the highest-priority version reports it (stable before canary
    before previous, then by weight), every field as vLLM gave it (`root`, `parent`, `owned_by`,
    `created`, `permission`, ...), except `max_model_len`: the smallest that any version taking
    traffic reports, since a request may go to any of them; a LoRA adapter, which vLLM lists with
    its base as `parent` and `max_model_len` null, gets its base's (it runs within the base's
    context). Only names the gateway accepts (`model_names`) are listed, in the order reported.
    """
    ordered = sorted(reports, key=lambda r: (ROLE_ORDER.get(r[0], 9), -r[1]))
    cards: dict[str, dict[str, Any]] = {}
    lengths: dict[str, list[int]] = {}
    for _, weight, data in ordered:
        for card in data:
            if not isinstance(card, dict) or card.get("id") not in model_names:
                continue
            cards.setdefault(card["id"], dict(card))
            if weight > 0 and _is_int(card.get("max_model_len")):
                lengths.setdefault(card["id"], []).append(card["max_model_len"])
    for name, values in lengths.items():
        cards[name]["max_model_len"] = min(values)
    for card in cards.values():
        base = cards.get(card.get("parent"))
        if card.get("max_model_len") is None and base is not None and base is not card:
            card["max_model_len"] = base.get("max_model_len")
    return list(cards.values())
