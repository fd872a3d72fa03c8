"""PII redaction in the gateway: every field of a request or a response that carries text, streamed or
not, for the scope `piiRedaction` sets (stored | prompts | promptsAndAnswers, see docs/operations.md).

The detection itself is `llmops.pii` (shared with training); this module knows the OpenAI shapes:

- requests (`Redaction.request`): chat `messages[].content` (a string or parts with `text`),
  `tool_calls[].function.arguments` and `function_call.arguments` (JSON), `reasoning_content`,
  `reasoning`, `refusal`; completions `prompt` (a string or a list of strings) and `suffix`;
  embeddings `input`; Responses `input` (a string or items with `content`, `arguments`, `output`)
  and `instructions`. Token ids are left as they are: they carry no text the gateway can read.
- answers (`Redaction.answer`, one per response): per choice, `content`/`text`, `reasoning_content`,
  `reasoning`, `refusal`, tool-call and function-call `arguments`, and the tokens that `logprobs`
  spell out (`content[].token`/`bytes`/`top_logprobs`, completions' `tokens`/`top_logprobs`). A
  whole response is an answer fed at once; a stream is fed event by event, each field of each choice
  through its own `llmops.pii.StreamRedactor`, released at `finish_reason`, so a streamed answer
  equals the whole one redacted, for any chunking and any interleaving of `n > 1` choices.
  The Responses API's typed events and output items: `ResponsesRedactor`.

JSON arguments stay valid JSON (`JsonRedactor`): the text of every string is decoded, redacted and
encoded again; a number that is itself personal data (a card number written as a JSON number)
becomes a quoted placeholder.

Over 400 lines on purpose: one walker per OpenAI shape (chat, completions, responses, their
streamed events), each paired with its stream state; they change together when the API does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llmops.api.modeldeployment import PiiRedaction
from llmops.pii import Detector, Segmenter, StreamRedactor

__all__ = ["AnswerRedactor", "JsonRedactor", "Redaction", "ResponsesRedactor"]

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUMBER_CHARS = frozenset("-+0123456789.eE")
_PLAIN = re.compile(r'[^"\\]+')
_SURROGATE = re.compile("[\ud800-\udfff]")


def _encode(text: str) -> str:
    """JSON string content for `text` (no quotes); lone surrogates stay \\u escapes. Char by char, so
    encoding pieces and joining them equals encoding the whole."""
    out = json.dumps(text, ensure_ascii=False)[1:-1]
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out) if _SURROGATE.search(out) else out


class JsonRedactor:
    """Redacts JSON text (tool-call arguments) fed in chunks; `feed`s then `flush()` give the same output
    for any chunking. A lexer, not a parser: text that is not valid JSON is still redacted."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.in_string = False
        self.escape = ""  # an escape sequence read so far, from its backslash
        self.number = ""  # a number token outside strings, held until it ends
        self.text: StreamRedactor | None = None

    def _end_number(self) -> str:
        token, self.number = self.number, ""
        found = self.detector.find_in_segment(token) if token else []
        return json.dumps(found[0].placeholder) if found else token

    def feed(self, chunk: str) -> str:
        out: list[str] = []
        i, n = 0, len(chunk)
        while i < n:
            if not self.in_string:
                ch = chunk[i]
                if ch in _NUMBER_CHARS:
                    self.number += ch
                    i += 1
                    continue
                if self.number:
                    out.append(self._end_number())
                out.append(ch)
                i += 1
                if ch == '"':
                    self.in_string, self.text = True, StreamRedactor(self.detector)
                continue
            assert self.text is not None
            if self.escape:
                self.escape += chunk[i]
                i += 1
                if self.escape[1] == "u" and len(self.escape) < 6:
                    continue
                code = self.escape[1]
                if code == "u":
                    try:
                        decoded = chr(int(self.escape[2:], 16))
                    except ValueError:
                        decoded = self.escape
                else:
                    decoded = _ESCAPES.get(code, code)
                self.escape = ""
                out.append(_encode(self.text.feed(decoded)))
                continue
            m = _PLAIN.match(chunk, i)
            if m:
                out.append(_encode(self.text.feed(m.group())))
                i = m.end()
                continue
            if chunk[i] == "\\":
                self.escape = "\\"
            else:  # the closing quote
                out.append(_encode(self.text.flush()) + '"')
                self.in_string, self.text = False, None
            i += 1
        return "".join(out)

    def flush(self) -> str:
        if self.in_string and self.text is not None:
            return _encode(self.text.flush())  # an unterminated string stays unterminated
        return self._end_number() if self.number else ""


def redact_json(detector: Detector, text: str) -> str:
    r = JsonRedactor(detector)
    return r.feed(text) + r.flush()


class TokenRedactor:
    """Redacts the tokens that logprobs spell out, fed in order: a token overlapping a finding carries
    the placeholder (the first one) or loses the characters inside it (the rest), and its alternatives
    (`top_logprobs`) become the placeholder. Entries are held back like text: until their segment is
    settled. An entry is a chat logprob object, or a completions (token, logprob, top, offset) tuple."""

    def __init__(self, detector: Detector, chat: bool) -> None:
        self.detector, self.chat = detector, chat
        self.segmenter = Segmenter()
        self.entries: list[Any] = []  # held entries
        self.text = ""  # their text
        self.text_at = 0  # offset of self.text in the whole token text
        self.settled = 0  # whole-text offset up to which segments are settled
        self.edits: dict[int, str] = {}  # whole-text offset -> placeholder starting there
        self.masked: dict[int, str] = {}  # whole-text offset inside a finding -> its placeholder
        self.out_offset: int | None = None  # completions: the running text_offset of the output

    def _token(self, entry: Any) -> str:
        return entry.get("token", "") if self.chat else entry[0]

    def _settle(self, upto: int) -> None:
        start = self.settled - self.text_at
        for m in self.detector.find_in_segment(self.text[start : upto - self.text_at]):
            a, b = self.settled + m.start, self.settled + m.end
            self.edits[a] = m.placeholder
            self.masked.update(dict.fromkeys(range(a, b), m.placeholder))
        self.settled = upto

    def feed(self, entries: list[Any]) -> list[Any]:
        for entry in entries:
            token = self._token(entry)
            self.entries.append(entry)
            self.text += token
            for cut in self.segmenter.feed(token):
                self._settle(cut)
        return self._release(self.settled)

    def flush(self) -> list[Any]:
        self._settle(self.text_at + len(self.text))
        return self._release(self.settled)

    def _release(self, upto: int) -> list[Any]:
        out, pos = [], self.text_at
        while self.entries:
            token = self._token(self.entries[0])
            if pos + len(token) > upto:
                break
            out.append(self._rewrite(self.entries.pop(0), token, pos))
            pos += len(token)
        self.text = self.text[pos - self.text_at :]
        self.text_at = pos
        return out

    def _rewrite(self, entry: Any, token: str, pos: int) -> Any:
        span = range(pos, pos + len(token))
        placeholder = next((self.masked[i] for i in span if i in self.masked), None)
        new = token
        if placeholder is not None:
            parts = []
            for i, ch in zip(span, token, strict=True):
                if i in self.edits:
                    parts.append(self.edits.pop(i))
                elif i not in self.masked:
                    parts.append(ch)
                self.masked.pop(i, None)
            new = "".join(parts)
        if self.chat:
            entry = dict(entry, token=new)
            if isinstance(entry.get("bytes"), list):
                entry["bytes"] = list(new.encode())
            if placeholder and isinstance(entry.get("top_logprobs"), list):
                entry["top_logprobs"] = [
                    dict(alt, token=placeholder, bytes=list(placeholder.encode()) if "bytes" in alt else None)
                    for alt in entry["top_logprobs"]
                    if isinstance(alt, dict)
                ]
            return entry
        _, logprob, top, offset = entry
        if placeholder and isinstance(top, dict) and top:
            top = {placeholder: max(top.values())}
        if self.out_offset is None:
            self.out_offset = offset if isinstance(offset, int) else 0
        offset, self.out_offset = self.out_offset, self.out_offset + len(new)
        return (new, logprob, top, offset)


_TEXT_FIELDS_CHAT = ("content", "reasoning_content", "reasoning", "refusal")


class AnswerRedactor:
    """The answer of one response, redacted choice by choice and field by field (see module doc)."""

    def __init__(self, detector: Detector, chat: bool) -> None:
        self.detector, self.chat = detector, chat
        self.streams: dict[tuple[Any, ...], StreamRedactor | JsonRedactor | TokenRedactor] = {}

    def _get(self, key: tuple[Any, ...], kind: str) -> Any:
        red = self.streams.get(key)
        if red is None:
            if kind == "json":
                red = JsonRedactor(self.detector)
            elif kind == "tokens":
                red = TokenRedactor(self.detector, self.chat)
            else:
                red = StreamRedactor(self.detector)
            self.streams[key] = red
        return red

    def event(self, obj: dict[str, Any], final: bool = False) -> bool:
        """Redact one chunk in place, or with `final` a whole response (every choice ends in it);
        True when something was rewritten."""
        changed = False
        for choice in obj.get("choices") or []:
            if isinstance(choice, dict):
                changed |= self._choice(choice, final)
        return changed

    def _text(self, holder: dict[str, Any], name: str, key: tuple[Any, ...], finish: bool) -> bool:
        value = holder.get(name)
        if not isinstance(value, str) and not (finish and key in self.streams):
            return False
        red = self._get(key, "text")
        out = red.feed(value) if isinstance(value, str) else ""
        if finish:
            out += red.flush()
            del self.streams[key]
        if isinstance(value, str) or out:
            holder[name] = out
            return True
        return False

    def _choice(self, choice: dict[str, Any], final: bool) -> bool:
        idx = choice.get("index", 0)
        finish = final or choice.get("finish_reason") is not None
        changed = False
        holder = choice.get("message" if final else "delta") if self.chat else choice
        if not isinstance(holder, dict):
            holder = {}
        names = _TEXT_FIELDS_CHAT if self.chat else ("text",)
        for name in names:
            changed |= self._text(holder, name, (idx, name), finish)
        if self.chat:
            changed |= self._tool_calls(holder, idx, finish)
            call = holder.get("function_call")
            if isinstance(call, dict):
                changed |= self._arguments(call, (idx, "function_call"), finish)
            elif finish and (idx, "function_call") in self.streams:
                holder["function_call"] = {}
                changed |= self._arguments(holder["function_call"], (idx, "function_call"), finish)
        changed |= self._logprobs(choice, idx, finish)
        if self.chat and holder and not isinstance(choice.get("message" if final else "delta"), dict):
            choice["message" if final else "delta"] = holder
        return changed

    def _arguments(self, call: dict[str, Any], key: tuple[Any, ...], finish: bool) -> bool:
        value = call.get("arguments")
        if not isinstance(value, str) and not (finish and key in self.streams):
            return False
        red = self._get(key, "json")
        out = red.feed(value) if isinstance(value, str) else ""
        if finish:
            out += red.flush()
            del self.streams[key]
        call["arguments"] = out
        return True

    def _tool_calls(self, holder: dict[str, Any], idx: Any, finish: bool) -> bool:
        calls = holder.get("tool_calls")
        changed, seen = False, set()
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if not isinstance(call, dict):
                    continue
                number = call.get("index", position)
                seen.add(number)
                function = call.get("function")
                if isinstance(function, dict):
                    changed |= self._arguments(function, (idx, "tool", number), finish)
        if finish:  # arguments still held for calls this chunk does not mention
            for key in [k for k in self.streams if k[0] == idx and k[1] == "tool" and k[2] not in seen]:
                tail: dict[str, Any] = {}
                self._arguments(tail, key, True)
                if tail.get("arguments"):
                    if not isinstance(holder.get("tool_calls"), list):
                        holder["tool_calls"] = []
                    holder["tool_calls"].append({"index": key[2], "function": tail})
                    changed = True
        return changed

    def _logprobs(self, choice: dict[str, Any], idx: Any, finish: bool) -> bool:
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict):
            if finish and (idx, "logprobs") in self.streams:
                logprobs = choice["logprobs"] = {}
            else:
                return False
        key = (idx, "logprobs")
        red = self._get(key, "tokens")
        if self.chat:
            entries = [e for e in logprobs.get("content") or [] if isinstance(e, dict)]
            out = red.feed(entries) + (red.flush() if finish else [])
            logprobs["content"] = out
        else:
            tokens = logprobs.get("tokens") or []
            n = len(tokens)
            columns = [
                tokens,
                logprobs.get("token_logprobs") or [None] * n,
                logprobs.get("top_logprobs") or [None] * n,
                logprobs.get("text_offset") or [0] * n,
            ]
            entries = [e for e in zip(*columns, strict=False) if isinstance(e[0], str)]
            out = red.feed(entries) + (red.flush() if finish else [])
            logprobs["tokens"] = [e[0] for e in out]
            logprobs["token_logprobs"] = [e[1] for e in out]
            logprobs["top_logprobs"] = [e[2] for e in out] if logprobs.get("top_logprobs") else None
            logprobs["text_offset"] = [e[3] for e in out]
        if finish:
            del self.streams[key]
        return True


class Redaction:
    """What one gateway redacts, from `piiRedaction`: `prompts`/`answers` say which directions."""

    def __init__(self, config: PiiRedaction) -> None:
        self.config = config
        self.detector = Detector(config.entities, config.regions)
        self.prompts = config.scope in ("prompts", "promptsAndAnswers")
        self.answers = config.scope == "promptsAndAnswers"

    def text(self, text: str) -> str:
        return self.detector.redact(text)

    def json(self, text: str) -> str:
        return redact_json(self.detector, text)

    def answer(self, chat: bool) -> AnswerRedactor:
        return AnswerRedactor(self.detector, chat)

    def responses_answer(self) -> ResponsesRedactor:
        """For `/v1/responses`: streamed events (`event`) or a whole response (`output(obj["output"])`)."""
        return ResponsesRedactor(self.detector)

    def response(self, obj: dict[str, Any], chat: bool) -> bool:
        """A whole (non-streamed) response, in place."""
        return self.answer(chat).event(obj, final=True)

    def request(self, body: dict[str, Any], endpoint: str) -> bool:
        """Every text of a request body, in place: endpoint chat | completions | embeddings | responses."""
        before = json.dumps(body, sort_keys=True)
        if endpoint == "chat":
            for message in body.get("messages") or []:
                if isinstance(message, dict):
                    self._message(message)
        elif endpoint == "completions":
            self._strings(body, "prompt")
            self._strings(body, "suffix")
        elif endpoint == "embeddings":
            self._strings(body, "input")
        elif endpoint == "responses":
            self._strings(body, "instructions")
            items = body.get("input")
            if isinstance(items, str):
                body["input"] = self.text(items)
            elif isinstance(items, list):
                for item in items:
                    if isinstance(item, dict):
                        self._message(item)
                        if isinstance(item.get("arguments"), str):
                            item["arguments"] = self.json(item["arguments"])
                        self._strings(item, "output")
        return json.dumps(body, sort_keys=True) != before

    def _strings(self, holder: dict[str, Any], name: str) -> None:
        value = holder.get(name)
        if isinstance(value, str):
            holder[name] = self.text(value)
        elif isinstance(value, list):
            holder[name] = [self.text(v) if isinstance(v, str) else v for v in value]

    def _message(self, message: dict[str, Any]) -> None:
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = self.text(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"] = self.text(part["text"])
        for name in ("reasoning_content", "reasoning", "refusal"):
            if isinstance(message.get(name), str):
                message[name] = self.text(message[name])
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                function["arguments"] = self.json(function["arguments"])
        call = message.get("function_call")
        if isinstance(call, dict) and isinstance(call.get("arguments"), str):
            call["arguments"] = self.json(call["arguments"])


_RESPONSES_TEXT = {  # Responses API event families: the field of the .delta event and of the .done one
    "response.output_text": "text",
    "response.refusal": "refusal",
    "response.reasoning_text": "text",
    "response.reasoning_summary_text": "text",
    "response.function_call_arguments": "arguments",
}


class ResponsesRedactor:
    """The Responses API (`/v1/responses`) answer: `event(obj)` for each streamed event returns the
    events to send instead (a `.done` event is preceded by a `.delta` with the text held back, when
    there is some); `output(items)` redacts whole output items (non-streamed responses, and the
    `output_item.done`, `content_part.done` and `response.completed` events). Deltas and done texts
    agree: the deltas of one part joined equal its done text, redacted whole."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.streams: dict[tuple[Any, ...], StreamRedactor | JsonRedactor] = {}

    def _key(self, family: str, obj: dict[str, Any]) -> tuple[Any, ...]:
        return (family, obj.get("output_index"), obj.get("content_index"), obj.get("summary_index"))

    def _new(self, family: str) -> StreamRedactor | JsonRedactor:
        if family == "response.function_call_arguments":
            return JsonRedactor(self.detector)
        return StreamRedactor(self.detector)

    def event(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        kind = obj.get("type")
        if not isinstance(kind, str):
            return [obj]
        family, _, phase = kind.rpartition(".")
        if family in _RESPONSES_TEXT and phase == "delta" and isinstance(obj.get("delta"), str):
            key = self._key(family, obj)
            red = self.streams.get(key) or self.streams.setdefault(key, self._new(family))
            obj["delta"] = red.feed(obj["delta"])
            return [obj]
        if family in _RESPONSES_TEXT and phase == "done":
            out = []
            red = self.streams.pop(self._key(family, obj), None)
            tail = red.flush() if red is not None else ""
            if tail:
                keep = ("item_id", "output_index", "content_index", "summary_index", "sequence_number")
                out.append(
                    {"type": f"{family}.delta", **{k: obj[k] for k in keep if k in obj}, "delta": tail}
                )
            name = _RESPONSES_TEXT[family]
            if isinstance(obj.get(name), str):
                obj[name] = self._whole(family, obj[name])
            out.append(obj)
            return out
        if isinstance(obj.get("part"), dict):
            self._part(obj["part"])
        if isinstance(obj.get("item"), dict):
            self.output([obj["item"]])
        if isinstance(obj.get("response"), dict) and isinstance(obj["response"].get("output"), list):
            self.output(obj["response"]["output"])
        return [obj]

    def _whole(self, family: str, text: str) -> str:
        if family == "response.function_call_arguments":
            return redact_json(self.detector, text)
        return self.detector.redact(text)

    def _part(self, part: dict[str, Any]) -> None:
        for name in ("text", "refusal"):
            if isinstance(part.get(name), str):
                part[name] = self.detector.redact(part[name])

    def output(self, items: list[Any]) -> None:
        """Whole output items, in place: message parts, function-call arguments, reasoning texts."""
        for item in items:
            if not isinstance(item, dict):
                continue
            for part in [*(item.get("content") or []), *(item.get("summary") or [])]:
                if isinstance(part, dict):
                    self._part(part)
            if isinstance(item.get("arguments"), str):
                item["arguments"] = redact_json(self.detector, item["arguments"])
            if isinstance(item.get("output"), str):
                item["output"] = self.detector.redact(item["output"])
