"""The answer's way back: from a replica's response to the client, redacted and counted.

`Relay.forward` takes the upstream response of one proxied request and answers the client:
- a whole answer (an error status, or `stream` false) is read, then, for completions and chat, its
  usage decoded alone (`flat_usage`) unless answers are redacted or the request is sampled,
  in which case it is parsed whole (`finish_plain`); other endpoints in `finish_other`;
- an SSE stream (`_stream`) is forwarded buffer by buffer as whole events arrive (serving.openai's
  `relay` says which events are parsed); the headers go out with the first events when they are
  already here. A replica that fails mid-stream ends the client's stream with an SSE `error` event
  (502); a client that goes away (`ClientGone`) closes the upstream response, which aborts vLLM's
  work (499). Time to first token is observed per version.
It returns `(code, reason, usage, texts, response)`: the status and error reason for the metrics,
the answer's usage (prompt and completion tokens), the answer texts when sampled, and the response.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from llmops.serving.balancer import Replica
from llmops.serving.endpoints import ResponsesStream, response_texts, usage_of
from llmops.serving.logs import log
from llmops.serving.metrics import Metrics
from llmops.serving.openai import (
    StreamState,
    error_body,
    flat_usage,
    joined,
    relay,
    text_of,
)
from llmops.serving.pii import Redaction
from llmops.serving.server import Request, Response, StreamResponse
from llmops.serving.upstream import UpstreamDisconnected, UpstreamError, UpstreamResponse

Forwarded = tuple[int, str | None, dict[str, Any] | None, list[str] | None, Response]


class ClientGone(Exception):
    """Writing to the client failed: it disconnected."""


class Relay:
    """Answers clients from upstream responses; `answers` redacts them (None: answers are not redacted)."""

    def __init__(self, answers: Redaction | None, metrics: Metrics) -> None:
        self.answers = answers
        self.metrics = metrics

    async def forward(
        self,
        request: Request,
        replica: Replica,
        upstream: UpstreamResponse,
        kind: str,
        stream: bool,
        strip_usage: bool,
        sampled: bool,
        start: float,
    ) -> Forwarded:
        try:
            extra = {"X-Llmops-Version": replica.version}
            if upstream.status != 200 or not stream:
                payload = await upstream.read()
                usage, texts = None, None
                if upstream.status == 200 and kind in ("chat", "completions"):
                    usage = None if self.answers is not None or sampled else flat_usage(payload)
                    if usage is None:  # redacting, sampling, or no flat usage object: parse it all
                        payload, usage, texts = self.finish_plain(payload, kind == "chat", sampled)
                elif upstream.status == 200:
                    payload, usage, texts = self.finish_other(payload, kind, sampled)
                reason = None if upstream.status < 400 else f"upstream_{upstream.status}"
                ctype = upstream.header("content-type", "application/json")
                resp = Response(payload, upstream.status, {"Content-Type": ctype, **extra})
                return upstream.status, reason, usage, texts, resp
            return await self._stream(
                request, upstream, kind, strip_usage, sampled, start, replica.version, extra
            )
        except BaseException:
            # Cancelled (the client hung up) or failed: close the upstream connection rather than
            # return it to the pool half-read; vLLM aborts a request whose connection closes.
            upstream.close()
            raise
        finally:
            upstream.release()

    def finish_plain(
        self, payload: bytes, chat: bool, sampled: bool
    ) -> tuple[bytes, dict[str, Any] | None, list[str] | None]:
        """A whole completions (`chat` False) or chat answer: `(payload, usage, texts)`, the payload
        redacted when answers are, the choices' texts when `sampled` (else None)."""
        try:
            obj = json.loads(payload)
        except ValueError:
            return payload, None, None
        if not isinstance(obj, dict):
            return payload, None, None
        if self.answers is not None and self.answers.response(obj, chat):
            payload = json.dumps(obj, ensure_ascii=False).encode()
        key = "content" if chat else "text"
        choices = obj.get("choices") or []
        texts = [t for c in choices if isinstance(t := text_of(c, chat, key, "message"), str)]
        return payload, obj.get("usage"), texts if sampled else None

    def finish_other(
        self, payload: bytes, kind: str, sampled: bool
    ) -> tuple[bytes, dict[str, Any] | None, list[str] | None]:
        """A whole answer of the responses, embeddings, tokenize or detokenize endpoint."""
        if kind == "tokenize":  # token ids: nothing to count or redact
            return payload, None, None
        # Vectors: only the usage matters, and parsing a large answer costs.
        if kind == "embeddings" and not sampled and (usage := flat_usage(payload)) is not None:
            return payload, usage_of({"usage": usage}, kind), None
        try:
            obj = json.loads(payload)
        except ValueError:
            return payload, None, None
        texts = response_texts(obj, kind)
        if self.answers is not None and texts:
            if kind == "detokenize":
                obj["prompt"] = self.answers.text(obj["prompt"])
            else:
                self.answers.responses_answer().output(obj.get("output") or [])
                if isinstance(obj.get("output_text"), str):
                    obj["output_text"] = self.answers.text(obj["output_text"])
            texts = response_texts(obj, kind)
            payload = json.dumps(obj).encode()
        return payload, usage_of(obj, kind), texts if sampled else None

    async def _stream(
        self,
        request: Request,
        upstream: UpstreamResponse,
        kind: str,
        strip_usage: bool,
        sampled: bool,
        start: float,
        version: str,
        extra: dict[str, str],
    ) -> Forwarded:
        resp = StreamResponse(
            200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **extra}
        )
        # When the first events are already here, the headers go out with them in one write (a
        # syscall less per request); else at once, as the stream opens.
        resp.send_headers_now = not upstream.buffered()
        await resp.prepare(request)
        chat = kind == "chat"
        state: StreamState | ResponsesStream
        if kind == "responses":  # typed events, each parsed (TTFT, usage and the end are in them)
            redactor = self.answers.responses_answer() if self.answers is not None else None
            state = ResponsesStream(sampled, redactor)
            parse_all = True
        else:
            answer = self.answers.answer(chat) if self.answers is not None else None
            state = StreamState(answer, sampled, strip_usage)
            parse_all = state.answer is not None or state.texts is not None
        code, reason = 200, None
        resp_ended = False
        try:
            # Forward whole buffers of events as they arrive; parse only the events that need it (the
            # usage chunk, [DONE], or every event when redacting or sampling). JSON-decoding every
            # chunk would cost more CPU than the rest of the proxy together.
            pending = b""
            while data := await upstream.read_some():
                if b"\r" in data:
                    data = data.replace(b"\r\n", b"\n")
                blob = pending + data if pending else data
                cut = blob.rfind(b"\n\n") + 2
                if cut < 2:  # no whole event yet
                    pending = blob
                    continue
                pending = blob[cut:]
                out = b"" if state.done else relay(blob[:cut], state, chat, parse_all)
                if out and not resp_ended:
                    try:
                        if state.done:  # the last events and the end of the body in one write
                            resp_ended = True
                            await resp.write_eof(out)
                        else:
                            await resp.write(out)
                    except (ConnectionError, RuntimeError) as e:
                        raise ClientGone() from e
                if state.done:
                    # The client has its whole answer: account for it now. The end of the upstream
                    # body follows at once; the connection goes back to the pool when it has come.
                    upstream.release(drain=5)
                    break
            if not state.done:
                raise UpstreamDisconnected("the stream ended before its last event")
        except (UpstreamError, TimeoutError) as e:
            if not state.done:  # after [DONE] the client has its whole answer: only the tail is lost
                code, reason = 502, "upstream_disconnect"
                log.warning("upstream stream of version %s failed: %s", version, e)
                event = error_body(f"the model server failed mid-stream: {e}", "upstream_error", 502)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await resp.write(b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n")
        except ClientGone:  # the client went away; closing the upstream response aborts the work
            code, reason = 499, "client_disconnect"
            upstream.close()
        if state.first_token_at is not None:
            self.metrics.ttft.labels(version).observe(state.first_token_at - start)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return code, reason, state.usage, joined(state.texts), resp
