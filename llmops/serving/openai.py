"""The OpenAI wire format as the gateway handles it (pure: bytes and dicts in, bytes and dicts out).

- Errors: `HttpError` (status, message, reason for the metrics and logs, OpenAI error type,
  Retry-After, a `code` other than the status, further headers) and its body, `error_body`
  (`{"error": {"message", "type", "param", "code"}}`).
- Requests: `check_request` (serving.endpoints' checks as `HttpError` 400 or 404), `ask_for_usage`
  (a streamed completions or chat request asks for the usage chunk, for token accounting),
  `forwarded_body` (the bytes sent upstream: the client's own where nothing changed),
  `redaction_endpoint` (the request shape `llmops.serving.pii.Redaction.request` reads).
- Streamed answers, as buffers of whole SSE events: `relay` forwards the events before the first one
  with a usage object or `[DONE]` as they came (found by `usage_or_done_at`, one search per buffer)
  and passes the rest, or every event when redacting or sampling, through `transform_event` into
  `StreamState` (completions and chat) or `llmops.serving.endpoints.ResponsesStream` (/v1/responses): usage,
  first token time, collected texts, redaction, and the injected usage chunk dropped.
- Whole answers: `flat_usage` decodes the `usage` object without building the rest; `text_of` reads a
  choice's text.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import msgspec

from llmops.serving.endpoints import BadRequest, ResponsesStream, parse_body, validate_request
from llmops.serving.pii import AnswerRedactor
from llmops.serving.server import Response, json_response

# An event worth parsing on the fast path: one with a usage object (not `"usage": null`), or [DONE].
USAGE_OR_DONE = re.compile(rb'"usage"\s*:\s*\{|\[DONE\]')
_SPACE = b" \t\n\r\x0b\x0c"


def usage_or_done_at(data: bytes) -> int:
    """Where `USAGE_OR_DONE` first matches in `data` (-1: nowhere), found with `bytes.find`, which is
    several times faster than the regular expression on a buffer of events."""
    done = data.find(b"[DONE]")
    i = data.find(b'"usage"')
    while i != -1 and (done == -1 or i < done):
        j = i + 7
        while j < len(data) and data[j] in _SPACE:
            j += 1
        if j < len(data) and data[j] == 58:  # ':'
            j += 1
            while j < len(data) and data[j] in _SPACE:
                j += 1
            if j < len(data) and data[j] == 123:  # '{'
                return i
        i = data.find(b'"usage"', i + 1)
    return done


def error_body(message: str, type_: str, code: int | str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        reason: str,
        type_: str = "invalid_request_error",
        retry_after: str = "",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.type, self.retry_after = (
            status,
            message,
            reason,
            type_,
            retry_after,
        )
        self.param = param  # the offending field, as OpenAI's errors name it
        self.code = code  # the body's `code`; None: the HTTP status
        self.headers = headers or {}

    def response(self) -> Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        code = self.status if self.code is None else self.code
        return json_response(
            error_body(self.message, self.type, code, self.param),
            status=self.status,
            headers={**headers, **self.headers},
        )


def forwarded_body(raw: bytes, body: dict[str, Any], *, changed: bool, add_usage: bool) -> bytes:
    """The request body sent upstream: the client's bytes where possible, else `body` re-encoded.

    `add_usage` (the body has no `stream_options` key) splices `stream_options.include_usage` into the
    client's bytes instead of re-encoding the parsed body, which keeps a long prompt's cost off the hot
    path; no key is duplicated.
    """
    text = raw.lstrip()
    if changed or (add_usage and not text.startswith(b"{")):
        return json.dumps(body).encode()
    return b'{"stream_options":{"include_usage":true},' + text[1:] if add_usage else raw


def ask_for_usage(body: dict[str, Any], kind: str) -> tuple[bool, bool]:
    """Make a streamed completions or chat request ask for the usage chunk (`stream_options.include_usage`).

    Returns `(strip_usage, add_usage)`: `strip_usage`, the client did not ask for the chunk, so it is
    not forwarded; `add_usage`, the body had no `stream_options` at all, so `forwarded_body` can splice
    the key into the client's bytes (else the changed `body` is re-encoded). /v1/responses streams
    carry their usage in `response.completed` and are left alone.
    """
    if not body.get("stream") or kind == "responses":
        return False, False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return False, False
    add_usage = "stream_options" not in body
    body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True, add_usage


def validate(body: Any, chat: bool, model_names: set[str], lora: bool = False) -> None:
    """Checks of a completions (`chat` False) or chat request; see `check_request` for every endpoint."""
    check_request(body, "chat" if chat else "completions", model_names, lora)


def check_request(body: Any, kind: str, model_names: set[str], lora: bool = False) -> None:
    """Checks that catch malformed requests before they use a queue slot; vLLM checks the rest.
    `lora`: the replicas run with LoRA on (serving.endpoints.validate_request)."""
    try:
        validate_request(body, kind, model_names, lora)
    except BadRequest as e:
        raise _http_error(e) from e


def read_json(raw: bytes) -> Any:
    """A request body parsed and checked (serving.endpoints.parse_body), or `HttpError` 400."""
    try:
        return parse_body(raw)
    except BadRequest as e:
        raise _http_error(e) from e


def _http_error(e: BadRequest) -> HttpError:
    if e.status == 404:
        return HttpError(404, str(e), "model_not_found", "not_found_error", param=e.param)
    return HttpError(e.status, str(e), "bad_request", param=e.param)


def redaction_endpoint(body: dict[str, Any], kind: str) -> str:
    """The request shape `Redaction.request` reads for endpoint `kind`: /tokenize takes either a
    chat's messages or a prompt; detokenize carries token ids only (redacted on the way back)."""
    if kind == "tokenize":
        return "chat" if "messages" in body else "completions"
    return kind


class StreamState:
    """What the gateway tracks of one streamed response."""

    def __init__(self, answer: AnswerRedactor | None, collect: bool, strip_usage: bool) -> None:
        self.answer = answer  # redacts every text field of every choice, when answers are redacted
        self.texts: dict[int, list[str]] | None = {} if collect else None
        self.strip_usage = strip_usage
        self.usage: dict[str, Any] | None = None
        self.first_token_at: float | None = None
        self.done = False

    def transform(self, payload: bytes, chat: bool) -> bytes | None:
        """The event's data to forward (None: drop it); records usage, first token and text."""
        if payload.strip() == b"[DONE]":
            self.done = True
            return payload
        try:
            obj = loads(payload)
        except ValueError:
            return payload
        if not isinstance(obj, dict):
            return payload
        usage = obj.get("usage")
        if usage:
            self.usage = usage
        choices = obj.get("choices") or []
        if self.strip_usage and usage and not choices:
            return None
        if self.strip_usage and "usage" in obj:
            obj.pop("usage")
        changed = self.strip_usage and usage is not None
        key = "content" if chat else "text"
        if self.first_token_at is None and any(
            isinstance(c, dict) and text_of(c, chat, key) for c in choices
        ):
            self.first_token_at = time.perf_counter()
        if self.answer is not None:
            changed = self.answer.event(obj) or changed
        for choice in choices:
            text = text_of(choice, chat, key) if isinstance(choice, dict) else None
            if self.texts is not None and isinstance(text, str):
                self.texts.setdefault(choice.get("index", 0), []).append(text)
        return json.dumps(obj, separators=(",", ":")).encode() if changed else payload


def relay(events: bytes, state: StreamState | ResponsesStream, chat: bool, parse_all: bool) -> bytes:
    """Whole SSE events (ending with a blank line) as they are to be forwarded.

    Without redaction or sampling, the events before the first one that carries usage or [DONE]
    go out as they came, found with one search of the buffer, not one per event.
    """
    start = 0
    if not parse_all:
        at = usage_or_done_at(events)
        start = events.rfind(b"\n\n", 0, at) + 2 if at >= 0 else len(events)
        if start == 1:  # the match is in the first event
            start = 0
        if state.first_token_at is None and _has_token(events, start):
            state.first_token_at = time.perf_counter()
        if start == len(events):
            return events
    out = [events[:start]] if start else []
    for event in events[start:].split(b"\n\n"):
        if not event:
            continue
        if state.done:  # nothing after the end ([DONE], or response.completed)
            break
        if parse_all or usage_or_done_at(event) >= 0:
            transformed = transform_event(event, state, chat)
            if transformed is None:
                continue
            event = transformed
        elif state.first_token_at is None and b'"content":""' not in event and b'"text":""' not in event:
            state.first_token_at = time.perf_counter()
        out.append(event + b"\n\n")
    return b"".join(out)


def _has_token(events: bytes, end: int) -> bool:
    """Whether an event in `events[:end]` (whole events) carries text: one that is not empty and has
    no `"content":""` or `"text":""`. Event by event from the first, without splitting the buffer (the
    first event usually has it)."""
    i = 0
    while i < end:
        j = events.find(b"\n\n", i, end)
        if j == -1:
            j = end
        if j > i:
            event = events[i:j]
            if b'"content":""' not in event and b'"text":""' not in event:
                return True
        i = j + 2
    return False


def transform_event(event: bytes, state: StreamState | ResponsesStream, chat: bool) -> bytes | None:
    """One SSE event through `StreamState.transform`; None drops it."""
    if isinstance(state, ResponsesStream):
        return state.transform_event(event)
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            out = state.transform(line[5:].strip(), chat)
            if out is None:
                return None
            lines.append(b"data: " + out)
        else:
            lines.append(line)
    return b"\n".join(lines)


def text_of(choice: Any, chat: bool, key: str, holder: str = "delta") -> Any:
    """A choice's text: chat `delta.content` (or `message.content`), completions `text`."""
    part = choice.get(holder) if chat and isinstance(choice, dict) else choice
    return part.get(key) if isinstance(part, dict) else None


_DECODER = msgspec.json.Decoder()


def loads(data: bytes) -> Any:
    """JSON from a replica, as json.loads reads it (NaN and Infinity too; ValueError if it is not
    JSON): msgspec's decoder first, 2-3x faster on an event, the stdlib's where msgspec refuses."""
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(data)


class _Usage(msgspec.Struct):
    usage: dict[str, Any] | None = None


# Reads only the top-level `usage` of an answer: msgspec checks the rest is JSON without building it.
_USAGE = msgspec.json.Decoder(_Usage)


def flat_usage(payload: bytes) -> dict[str, Any] | None:
    """The top-level `usage` object of a whole answer, decoded without building the rest (None if the
    answer is not a JSON object, or has no usage object). A sixth of what json.loads of a short
    answer costs (callgrind, bench/canned_upstream.py's answer: 6.8k instructions against 41.7k),
    and a search for it cost more: 24k of the then 350k instructions of a proxied request (277k
    now; callgrind, bench/gateway_overhead.py --canned)."""
    try:
        return _USAGE.decode(payload).usage
    except msgspec.DecodeError:
        return None


def joined(texts: dict[int, list[str]] | None) -> list[str] | None:
    """Each choice's streamed text, in choice order."""
    return ["".join(texts[i]) for i in sorted(texts)] if texts is not None else None
