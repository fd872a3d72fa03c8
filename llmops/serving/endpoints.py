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
field (`BadRequest.param`); vLLM checks the rest (ranges that depend on the model, like `max_tokens`
against its context). What passes them is what the gateway forwards, so they are also what keeps a
hostile body from the model server (tests/reliability/test_gateway_fuzz.py):

- `parse_body`: strict JSON in UTF-8: no NaN or Infinity, no lone surrogates (`"\ud800"`, which a
  tokenizer cannot encode), at most MAX_DEPTH levels of nesting, every integer within int64 and every
  number finite (`1e999` is infinity);
- `validate_request`: the fields each endpoint requires, and the type of every optional OpenAI or
  vLLM sampling field that is present (`FIELD_TYPES`; null is accepted as absent); `n` and `best_of`
  at most MAX_CHOICES (vLLM fans a request out into `n` sequences and sets no bound of its own);
  on a deployment whose replicas run with LoRA on, no request for prompt logprobs
  (`PROMPT_LOGPROBS_WITH_LORA`: they take vLLM's engine down).

Which other vLLM endpoints are not passed, and why, is in docs/operations.md ("The gateway's API").

`merge_model_cards` builds `GET /v1/models` from what the replicas report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import msgspec

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


MAX_DEPTH = 64  # levels of nested arrays and objects in a body (tool schemas nest; prompts do not)
MAX_CHOICES = 1024  # n and best_of (OpenAI allows 128; tests/serving asks vLLM for 1024 to load it)
INT64 = 1 << 63


# Why prompt logprobs are refused where LoRA is on. vLLM (0.32 and the versions before it) computes
# them with the LoRA mapping of the batch's sampled sequences over the hidden states of every prompt
# token: when the batch holds more than one sequence (`n` > 1, or any other request at the same time)
# the shapes differ and the engine dies (on the CPU: `einsum(): subscript b has size 3 for operand 1
# which does not broadcast with previously seen size 200`), failing every request in flight; with one
# sequence the mapping broadcasts and the numbers leave the adapter's lm_head out. Upstream:
# vllm-project/vllm#16668 and #17766 (the mapping), #51594 (the values). Reproduced here on the CPU
# with the test model and one adapter: a completion with `echo` and `logprobs` beside a running request.
PROMPT_LOGPROBS_WITH_LORA = (
    "asks for prompt logprobs, which this deployment does not serve: its replicas run with LoRA "
    "adapters, and vLLM computes prompt logprobs with the wrong LoRA mapping (its engine fails when the "
    "batch holds other sequences: vllm-project/vllm#16668, #17766)"
)
# What to send instead, by the field that asked (prompt_logprobs_field) and endpoint.
PROMPT_LOGPROBS_INSTEAD = {
    ("prompt_logprobs", "completions"): "leave 'prompt_logprobs' out",
    ("prompt_logprobs", "chat"): "leave 'prompt_logprobs' out",
    ("echo", "completions"): "send 'echo' without 'logprobs', or 'logprobs' without 'echo'",
    ("echo", "chat"): (
        "a chat's 'echo' asks for them unless 'top_logprobs' is null (vLLM's default is 0): send "
        "'top_logprobs': null with 'echo', or leave 'echo' out"
    ),
}


class BadRequest(ValueError):
    """A request body the gateway refuses: `status` 400 (malformed) or 404 (unknown model); `param`
    names the field, as OpenAI's errors do (None: the body as a whole)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# One decoder for every body: json.loads with an option builds a new JSONDecoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# msgspec's decoder (C) first: it takes only RFC 8259 JSON in UTF-8 (no BOM, NaN, Infinity, lone
# surrogate or number beyond a double), and what it takes the stdlib decoder reads to the same values;
# what it refuses goes through the stdlib one, whose errors name the fault. Several times faster on
# a chat or completions body (timeit).
_FAST = msgspec.json.Decoder()


def parse_body(raw: bytes) -> Any:
    """The request body as JSON (RFC 8259, UTF-8), checked as the module docstring says; `BadRequest`
    naming the offending field (its JSON path) otherwise."""
    try:
        body = _FAST.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        body = _parse_stdlib(raw)
    else:
        if _sound(body, 0):  # the common case: what msgspec took needs only these checks
            return body
    _check_values(body)  # what is wrong, and where (or nothing)
    return body


def _sound(value: Any, depth: int) -> bool:
    """True if `value`, as msgspec decoded it, passes `_check_values`: every integer within int64 and
    no array or object MAX_DEPTH levels deep (msgspec already refused lone surrogates, invalid UTF-8
    and numbers beyond a double). False: `_check_values` finds what is wrong. Several times cheaper
    than `_check_values` on a completions body (it builds no paths): 18k -> 6k instructions (callgrind)."""
    t = type(value)
    if t is int:
        return -INT64 <= value < INT64
    if t is not dict and t is not list:
        return True
    if depth >= MAX_DEPTH:
        return False
    if t is list and value:  # token ids and lists of texts, at C speed
        kinds = set(map(type, value))
        if kinds == {int}:
            return min(value) >= -INT64 and max(value) < INT64
        if kinds == {str}:
            return True
    for v in value.values() if t is dict else value:
        t = type(v)
        if t is int:
            if not -INT64 <= v < INT64:
                return False
        elif (t is dict or t is list) and not _sound(v, depth + 1):
            return False
    return True


def _parse_stdlib(raw: bytes) -> Any:
    """`raw` as the stdlib's json reads it, or `BadRequest` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):  # what json.loads says of it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        body = _DECODER.decode(text)
    except UnicodeDecodeError as e:
        raise BadRequest(f"the request body is not valid UTF-8 (byte {e.start})") from e
    except RecursionError as e:
        raise BadRequest(f"the request body nests deeper than {MAX_DEPTH} levels") from e
    except ValueError as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from e
    return body


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "body"


def _check_values(body: Any) -> None:
    """Depth, numbers and strings of every value in `body` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise BadRequest(
                        f"'{_path(where)}' holds a lone surrogate (\\u{ord(value[e.start]):04x}),"
                        " which is not a Unicode character",
                        param=_path(where),
                    ) from e
            continue
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            if not -INT64 <= value < INT64:
                raise BadRequest(f"'{_path(where)}' is out of the 64-bit integer range", param=_path(where))
            continue
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise BadRequest(f"'{_path(where)}' is too large a number", param=_path(where))
            continue
        if len(where) >= MAX_DEPTH:
            raise BadRequest(f"the request body nests deeper than {MAX_DEPTH} levels", param=_path(where))
        if isinstance(value, list) and value:  # token ids and lists of texts, at C speed
            kinds = set(map(type, value))
            if kinds == {int} and min(value) >= -INT64 and max(value) < INT64:
                continue
            if kinds == {str} and all(map(str.isascii, value)):
                continue
        if isinstance(value, dict):
            for k, v in value.items():
                if not k.isascii():
                    stack.append((k, (*where, "<key>")))
                if not isinstance(v, str) or not v.isascii():
                    stack.append((v, (*where, k)))
        else:
            stack.extend(
                (v, (*where, i)) for i, v in enumerate(value) if not isinstance(v, str) or not v.isascii()
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# The optional fields of the OpenAI API (and vLLM's sampling extensions) whose type the gateway checks:
# name -> (check, what the error says it must be). Ranges that depend on the model are vLLM's; the
# token budgets and choice counts are in here too, so that a body's fields are looked up in one pass.
FIELD_TYPES: dict[str, tuple[Any, str]] = {
    **{
        name: (lambda v: _is_int(v) and v >= 0, "a non-negative integer")
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens")
    },
    **{
        name: (lambda v: _is_int(v) and 1 <= v <= MAX_CHOICES, f"an integer from 1 to {MAX_CHOICES}")
        for name in ("n", "best_of")
    },
    **{
        name: (_is_number, "a number")
        for name in (
            "temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty",
            "repetition_penalty", "length_penalty",
        )
    },
    **{
        name: (_is_int, "an integer")
        for name in ("top_k", "seed", "min_tokens", "top_logprobs", "prompt_logprobs", "dimensions")
    },
    **{
        name: (lambda v: isinstance(v, bool), "true or false")
        for name in (
            "echo", "ignore_eos", "skip_special_tokens", "add_special_tokens", "add_generation_prompt",
            "include_stop_str_in_output", "parallel_tool_calls", "store", "continue_final_message",
        )
    },
    "stop": (lambda v: isinstance(v, str) or _is_str_list(v), "a string or a list of strings"),
    "stop_token_ids": (lambda v: isinstance(v, list) and all(_is_int(t) for t in v), "a list of token ids"),
    "user": (lambda v: isinstance(v, str), "a string"),
    "suffix": (lambda v: isinstance(v, str), "a string"),
    "instructions": (lambda v: isinstance(v, str), "a string"),
    "encoding_format": (lambda v: isinstance(v, str), "a string"),
    "logit_bias": (
        lambda v: isinstance(v, dict) and all(_is_number(b) for b in v.values()),
        "an object of numbers",
    ),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
    "response_format": (lambda v: isinstance(v, dict), "an object"),
    "metadata": (lambda v: isinstance(v, dict), "an object"),
    "tools": (lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v), "a list of objects"),
    "tool_choice": (lambda v: isinstance(v, (str, dict)), "a string or an object"),
}  # fmt: skip


def _check_model(body: dict[str, Any], model_names: set[str], required: bool) -> None:
    model = body.get("model")
    if model is None and not required:
        return
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", param="model")
    if model not in model_names:
        raise BadRequest(
            f"the model {model[:200]!r} does not exist; this endpoint serves {sorted(model_names)}",
            404,
            "model",
        )


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", param=f"messages[{i}]")
        content = m.get("content")
        if not (content is None or isinstance(content, (str, list))):
            raise BadRequest(
                f"messages[{i}].content must be a string or a list of content parts",
                param=f"messages[{i}].content",
            )
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise BadRequest(
                        f"messages[{i}].content[{j}] must be an object with a string 'type'",
                        param=f"messages[{i}].content[{j}]",
                    )


def prompt_logprobs_field(body: dict[str, Any], kind: str) -> str | None:
    """The field by which a completions or chat body asks vLLM for prompt logprobs, or None.

    vLLM's rule (its CompletionRequest and ChatCompletionRequest `to_sampling_params`): `prompt_logprobs`
    when set (0 included: the logprob of each prompt token), else with `echo` true, `logprobs`
    (completions; default null) or `top_logprobs` (chat; default 0, so a chat's `echo` alone asks
    unless `top_logprobs` is null). The Responses API has no such field.
    """
    if kind not in ("completions", "chat"):
        return None
    if body.get("prompt_logprobs") is not None:
        return "prompt_logprobs"
    if body.get("echo") is True:
        asked = body.get("logprobs") if kind == "completions" else body.get("top_logprobs", 0)
        if asked is not None:
            return "echo"
    return None


def validate_request(body: Any, kind: str, model_names: set[str], lora: bool = False) -> None:
    """Check the body of a request to endpoint `kind`; raises `BadRequest` naming the field.

    `lora`: the replicas run with LoRA on, so prompt logprobs are refused (PROMPT_LOGPROBS_WITH_LORA).
    """
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
            raise BadRequest(
                "'prompt' is required: a string, a list of strings or of token ids", param="prompt"
            )
    elif kind == "responses":
        value = body.get("input")
        if not (isinstance(value, str) or (isinstance(value, list) and value)):
            raise BadRequest(
                "'input' is required: a string or a non-empty list of input items", param="input"
            )
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise BadRequest(f"input[{i}] must be an object (an input item)", param=f"input[{i}]")
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
                "'input' is required: a string, a list of strings, of token ids, or of lists of token ids",
                param="input",
            )
    elif kind == "tokenize":
        if "messages" in body:
            _check_messages(body)
        elif not isinstance(body.get("prompt"), str):
            raise BadRequest("'prompt' (a string) or 'messages' (a list) is required", param="prompt")
    elif kind == "detokenize":
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(_is_int(t) for t in tokens):
            raise BadRequest("'tokens' is required and must be a list of token ids", param="tokens")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be true or false", param="stream")
    if body.get("stream") and kind not in STREAMING:
        raise BadRequest(f"'stream' is not supported by {ENDPOINTS[kind]}", param="stream")
    logprobs = body.get("logprobs")
    if logprobs is not None:
        if kind == "completions" and not _is_int(logprobs):
            raise BadRequest("'logprobs' must be an integer (how many per token)", param="logprobs")
        if kind != "completions" and not isinstance(logprobs, bool):
            raise BadRequest("'logprobs' must be true or false", param="logprobs")
    for name in FIELD_TYPES.keys() & body.keys():
        check, what = FIELD_TYPES[name]
        value = body[name]
        if value is not None and not check(value):
            raise BadRequest(f"'{name}' must be {what}", param=name)
    if lora and (field := prompt_logprobs_field(body, kind)) is not None:
        instead = PROMPT_LOGPROBS_INSTEAD[(field, kind)]
        raise BadRequest(f"'{field}' {PROMPT_LOGPROBS_WITH_LORA}; {instead}", param=field)


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


def tokens(value: Any) -> int:
    """A token count as a replica reports it, as a count: a non-negative whole number, 0 for anything
    else (a missing field, null, a string, a negative or non-finite number), so that no answer can
    lower a counter or fail the request's accounting."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return 0
    return int(value) if value != float("inf") else 0


def usage_of(obj: Any, kind: str) -> dict[str, int] | None:
    """Token counts of a whole (non-streamed) answer as {prompt_tokens, completion_tokens}, or None."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    if kind == "responses":  # input_tokens / output_tokens in the Responses API
        return {
            "prompt_tokens": tokens(usage.get("input_tokens")),
            "completion_tokens": tokens(usage.get("output_tokens")),
        }
    return {
        "prompt_tokens": tokens(usage.get("prompt_tokens")),
        "completion_tokens": tokens(usage.get("completion_tokens")),
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
