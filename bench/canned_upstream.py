"""An OpenAI-shaped upstream that answers at once with a canned completion, for measuring a proxy's hop.

    python bench/canned_upstream.py --port N [--chunks 16]

`POST /v1/completions` and `/v1/chat/completions` answer without looking at the prompt: a JSON
completion, or (with `"stream": true` in the body) `--chunks` SSE chunks of one token, a usage chunk
when `stream_options.include_usage` is asked for, and `data: [DONE]`, all in one write. `GET /health`
and `/v1/models` answer too (what proxies poll). Keep-alive as HTTP/1.1 has it.

It is a raw asyncio protocol over httptools (the parser uvicorn uses) on uvloop, so that answering
costs as little as possible and a proxy in front of it is what the measurement sees: a framework
server here would make the upstream, not the hop, the bottleneck at 64 concurrent streams on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import time

import httptools
import uvloop

MODEL = "tiny"


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _chunked(body: bytes) -> bytes:
    """One chunk of chunked transfer coding and the last chunk: the whole body in one write."""
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


class Canned:
    """The fixed answers, built once."""

    def __init__(self, chunks: int) -> None:
        usage = {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": 5 + chunks}
        created = int(time.time())
        self.plain = {}
        self.stream = {}
        for chat in (False, True):
            choice: dict = {"index": 0, "finish_reason": "length", "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": " token" * chunks}
            else:
                choice["text"] = " token" * chunks
            kind = "chat.completion" if chat else "text_completion"
            whole = {"id": "cmpl-canned", "object": kind, "created": created, "model": MODEL}
            self.plain[chat] = _response(
                b"200 OK",
                b"application/json",
                json.dumps({**whole, "choices": [choice], "usage": usage}).encode(),
            )
            events = []
            for i in range(chunks):
                piece: dict = {"index": 0, "finish_reason": "length" if i == chunks - 1 else None}
                piece.update({"delta": {"content": " token"}} if chat else {"text": " token"})
                event = {**whole, "object": kind + ".chunk" if chat else kind, "choices": [piece]}
                events.append(b"data: " + json.dumps(event).encode() + b"\n\n")
            usage_event = b"data: " + json.dumps({**whole, "choices": [], "usage": usage}).encode() + b"\n\n"
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            self.stream[chat] = (
                head + _chunked(b"".join(events) + b"data: [DONE]\n\n"),
                head + _chunked(b"".join(events) + usage_event + b"data: [DONE]\n\n"),
            )
        models = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "canned"}]}
        self.models = _response(b"200 OK", b"application/json", json.dumps(models).encode())
        self.health = _response(b"200 OK", b"text/plain", b"")
        self.not_found = _response(b"404 Not Found", b"text/plain", b"not found")


class Protocol(asyncio.Protocol):
    def __init__(self, canned: Canned) -> None:
        self.canned = canned
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        path = self.url.split(b"?", 1)[0]
        if path in (b"/v1/completions", b"/v1/chat/completions"):
            chat = path == b"/v1/chat/completions"
            body = b"".join(self.body)
            if b'"stream"' in body and json.loads(body).get("stream"):
                options = json.loads(body).get("stream_options") or {}
                out = self.canned.stream[chat][1 if options.get("include_usage") else 0]
            else:
                out = self.canned.plain[chat]
        elif path == b"/health":
            out = self.canned.health
        elif path == b"/v1/models":
            out = self.canned.models
        else:
            out = self.canned.not_found
        self.transport.write(out)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int, chunks: int) -> None:
    canned = Canned(chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Protocol(canned), host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--chunks", type=int, default=16, help="tokens (SSE chunks) per streamed answer")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.chunks))


if __name__ == "__main__":
    main()
