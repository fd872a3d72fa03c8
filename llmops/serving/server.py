"""The gateway's HTTP/1.1 server: an asyncio protocol per connection, httptools (llhttp, the parser
uvicorn uses) reading the requests, on uvloop.

Why not aiohttp's server: measured with bench/gateway_overhead.py --canned and a bare handler that
answers a fixed body, aiohttp's server (request, response and writer objects, routing, signals) costs
about 55 us of CPU per request more than this protocol on 2 cores, a third of the gateway's whole
per-request CPU and more than the gap to vllm-router's added latency; this server does only what the
gateway needs:

- `Server(routes, max_body)`: `routes` maps `(method, path)` to `async handler(request) -> Response`;
  an unknown path answers 404, a known path with another method 405 (with `Allow`), HEAD is answered
  like GET without the body. Each connection handles its requests in order (pipelined ones wait).
- `Request`: `method`, `path`, `headers` (names lower-case; decoded when first asked for, and
  `header(name)` decodes one alone), `read()` the body (`TooLarge` beyond `max_body` bytes;
  `ConnectionResetError` if the client leaves before it is all in), and `gone`.
  The handler runs from the moment the headers are in, so a client that hangs up while sending
  its body is seen too.
- A client that closes its connection cancels the handler of its request in flight, whatever it is
  waiting for (the gateway turns that into a 499).
- `Response(body, status, headers)` is sent whole (`Content-Length`); a `StreamResponse` is sent as
  it is written, with chunked transfer coding (HTTP/1.0 clients: until the connection closes);
  `write` waits while the client reads slower than the answer comes (transport flow control).
- Keep-alive as HTTP/1.1 has it; idle connections close after `keepalive_timeout` seconds.
  `Expect: 100-continue` is answered. Malformed requests get 400 and the connection closes.
- HTTPS with `listen(..., tls=context)` (serving.tls builds the context from a certificate Secret).

Limits (a client gets a 4xx, or its connection is closed, never an unbounded hold on the gateway;
`Limits` holds them, with these defaults):

| limit | default | beyond it |
|---|---|---|
| request line and headers | MAX_HEAD, 64 KiB | 431, closed |
| header fields | MAX_HEADERS, 100 | 431, closed |
| a request head arriving (slowloris) | `header_timeout`, 20 s from its first byte | 408, closed |
| a body arriving | `body_timeout`, 30 s without a byte | `BodyTimeout` (the gateway: 408, closed) |
| body size | `max_body` | `TooLarge` from `read()` (the gateway: 413) |
| answer bytes buffered for a client | WRITE_HIGH, 64 KiB | writers wait (until WRITE_LOW, 16 KiB) |
| a slow reader | `send_timeout`, 30 s to take the buffer down to WRITE_LOW | cut, logged "slow reader" |
| pipelined requests parsed ahead | MAX_PIPELINED, 32; PIPELINE_BYTES, 1 MiB of bodies | reading pauses |
| open connections | `max_connections`, 1024 | 503 with Retry-After, closed |

A connection that sends nothing at all closes after `keepalive_timeout`.
So a connection holds at most MAX_HEAD + `max_body` + PIPELINE_BYTES + WRITE_HIGH of the gateway's
memory, plus one read of the replica's answer in hand and serving.upstream's READ_HIGH unread (a
whole answer, for one that is not streamed: the replica's answer size), and the gateway at most
`max_connections` times that. A slow reader is one that cannot take 48 KiB in 30 s (1.6 KiB/s);
nginx's `send_timeout` (60 s between two writes) is the same idea.

Over 400 lines on purpose: the connection protocol, the request and the two response kinds share
one connection's state (parser, flow control, the handler in flight) and make sense only together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools

log = logging.getLogger("llmops.gateway")

Handler = Callable[["Request"], Awaitable["Response"]]

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS[499] = b"Client Closed Request"
MAX_HEAD = 64 << 10  # bytes of request line and headers (aiohttp and nginx allow 8-32 KiB per line)
MAX_HEADERS = 100  # header fields in one request (nginx and aiohttp: 100 too)
MAX_PIPELINED = 32  # requests parsed ahead of the one in flight before reading pauses
PIPELINE_BYTES = 1 << 20  # body bytes of requests parsed ahead before reading pauses
WRITE_HIGH = 64 << 10  # answer bytes buffered for a client before writers wait (transport flow control)
WRITE_LOW = 16 << 10  # ... and resume


@dataclass(frozen=True, slots=True)
class Limits:
    """How long and how much a client may take (the module docstring's table has the defaults)."""

    header_timeout: float = 20.0  # seconds for a request's line and headers, from its first byte
    body_timeout: float = 30.0  # seconds without a byte while a body is read
    send_timeout: float = 30.0  # seconds for a client to take the buffered answer down to WRITE_LOW
    max_connections: int = 1024  # open client connections; beyond, 503 and closed


class TooLarge(Exception):
    """The request body exceeds the server's `max_body`."""


class BodyTimeout(TimeoutError):
    """No byte of the request body came for the server's `body_timeout` seconds."""


_date_second = 0
_date_header = b""


def _date() -> bytes:
    """The `Date` header line, formatted once a second."""
    global _date_second, _date_header
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_header = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_header


def _head(status: int, headers: dict[str, str], tail: bytes) -> bytes:
    fields = "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode("latin-1")
    return b"HTTP/1.1 %d %s\r\n%s%s%s\r\n" % (status, _REASONS.get(status, b"Unknown"), fields, _date(), tail)


class Response:
    """A whole answer: `body` bytes, `status`, `headers` (Content-Length is set when sent)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes = b"", status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.body, self.status, self.headers = body, status, headers or {}


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj).encode(), status, {"Content-Type": "application/json", **(headers or {})})


class StreamResponse(Response):
    """An answer sent as it is written: `await prepare(request)`, `await write(data)`, then
    `await write_eof(data)`; writes to a client that has gone raise `ConnectionResetError`.

    `send_headers_now` False: the headers go out with the first write (one syscall less)."""

    __slots__ = ("_chunked", "_conn", "_ended", "_pending", "send_headers_now")

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        super().__init__(b"", status, headers)
        self._conn: _Connection | None = None
        self._pending = b""
        self._chunked = True
        self._ended = False
        self.send_headers_now = True

    async def prepare(self, request: Request) -> None:
        conn = request._conn
        self._conn = conn
        self._chunked = request.http11
        if self._chunked:
            tail = b"Transfer-Encoding: chunked\r\n"
        else:
            request.keep_alive = False
            tail = b"Connection: close\r\n"
        if not request.keep_alive and self._chunked:
            tail += b"Connection: close\r\n"
        self._pending = _head(self.status, self.headers, tail)
        if self.send_headers_now:
            await self.write(b"")

    def _frame(self, data: bytes) -> bytes:
        if not data or not self._chunked:
            return data
        return b"%x\r\n%s\r\n" % (len(data), data)

    async def write(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or self._ended:
            raise RuntimeError("write to a stream that is not prepared or has ended")
        out = self._frame(data)
        if self._pending:
            out, self._pending = self._pending + out, b""
        if not out:
            return
        conn.send(out)
        if conn.paused:
            await conn.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        """The last data and the end of the answer; a second call does nothing."""
        conn = self._conn
        if conn is None or self._ended:
            return
        self._ended = True
        out = self._pending + self._frame(data) + (b"0\r\n\r\n" if self._chunked else b"")
        self._pending = b""
        conn.send(out)
        if conn.paused:
            await conn.drain()


class Request:
    """One request: method, path (without the query), query string, headers (lower-case names)."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_header_map",
        "_raw_headers",
        "_size",
        "_too_large",
        "_waiter",
        "http11",
        "keep_alive",
        "method",
        "path",
        "query",
    )

    def __init__(
        self, conn: _Connection, method: str, url: bytes, raw_headers: dict[bytes, bytes], http11: bool
    ) -> None:
        self._conn = conn
        self.method = method
        if not url.startswith(b"/"):  # absolute-form (RFC 9112 3.2.2), or `*`
            parsed = httptools.parse_url(url) if url != b"*" else None
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"") if parsed else url
        path, _, query = url.partition(b"?")
        self.path, self.query = path.decode("latin-1"), query.decode("latin-1")
        self._raw_headers = raw_headers
        self._header_map: dict[str, str] | None = None
        self.http11 = http11
        self.keep_alive = True
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._waiter: asyncio.Future[None] | None = None
        self._too_large = False

    @property
    def headers(self) -> dict[str, str]:
        """The header fields: names lower-case, a repeated field's values joined with ", "."""
        if self._header_map is None:
            self._header_map = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in self._raw_headers.items()
            }
        return self._header_map

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header field `name` (lower-case) as in `headers`, or `default`, without
        decoding the others (most requests' fields are never read)."""
        value = self._raw_headers.get(name.encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    @property
    def gone(self) -> bool:
        """True once the client's connection is closed."""
        return self._conn.closed

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._conn.server.max_body:
            self._too_large = True
            self._chunks.clear()
        elif not self._too_large:
            self._chunks.append(data)
        self._wake()

    def _complete(self) -> None:
        self._done = True
        self._wake()

    async def read(self) -> bytes:
        """The whole body; `TooLarge` beyond the server's `max_body`, `ConnectionResetError` if the
        client closes before sending it all, `BodyTimeout` if it sends nothing for `body_timeout`
        seconds (the connection then closes after the answer)."""
        timeout = self._conn.server.limits.body_timeout
        while not self._done and not self._too_large:
            if self._conn.closed:
                raise ConnectionResetError("the client closed the connection while sending its body")
            waiter = self._waiter = self._conn.loop.create_future()
            timer = self._conn.loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            except BodyTimeout:
                self.keep_alive = False  # the rest of the body may still come: not a request boundary
                raise BodyTimeout(f"no byte of the request body came for {timeout:g} s") from None
            finally:
                timer.cancel()
                self._waiter = None
        if self._too_large:  # the rest of the body is read and dropped; the answer goes out at once
            raise TooLarge()
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)


class _Refused(Exception):
    """Raised in a parser callback: answer `status` with `message` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(BodyTimeout())


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.paused = False
        self._drain: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}  # the head's fields, names lower-case, not decoded
        self._head_size = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # a request's head has begun and is not all in yet
        self._reading = True
        self.request: Request | None = None  # the request being parsed
        self.current: Request | None = None  # the request in flight
        self.queue: deque[Request] = deque()  # parsed, waiting for the one in flight
        self.task: asyncio.Task[None] | None = None  # answers the requests, one at a time (_serve)
        self._next: asyncio.Future[None] | None = None  # the task waits on it for the next request
        self.sent = False  # something of the answer to the request in flight was written
        self._idle: asyncio.TimerHandle | None = None
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers go out as written
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        limit = self.server.limits.max_connections
        if len(self.server.connections) >= limit:
            self.server.refused_connections += 1
            if self.server.refused_connections == 1 or self.server.refused_connections % 1000 == 0:
                log.warning(
                    "%d client connections are open, the most allowed: refusing new ones with 503"
                    " (%d refused so far)",
                    limit,
                    self.server.refused_connections,
                )
            self._bad(503, f"overloaded: {limit} connections are open; retry", {"Retry-After": "1"})
            return
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._head_timer is not None:
            self._head_timer.cancel()
        if self.request is not None:
            self.request._wake()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.queue.clear()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the client closed the connection"))
            self._drain.exception()  # retrieved, if nobody was waiting

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.closed or (self.transport is not None and self.transport.is_closing()):
            return
        if self.request is None:  # bytes of a request's head (or the next request's)
            self._head_size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad(400, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError as e:
            if not isinstance(e.__context__, _Refused):
                raise
            self._bad(e.__context__.status, str(e.__context__))
        except httptools.HttpParserError as e:
            self._bad(400, f"malformed request: {e}")
        else:
            if self.request is None and self._head_size > MAX_HEAD:
                self._bad(431, f"the request line and headers exceed {MAX_HEAD} bytes")
            elif self._in_head and self._head_timer is None:
                # A head left incomplete by this read must be in within header_timeout (slowloris);
                # most heads arrive whole in one read and need no timer.
                self._head_timer = self.loop.call_later(self.server.limits.header_timeout, self._head_timeout)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_count = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise _Refused(431, f"a request may have at most {MAX_HEADERS} header fields")
        key = name.lower()
        self._headers[key] = self._headers[key] + b", " + value if key in self._headers else value

    def on_headers_complete(self) -> None:
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        headers = self._headers
        if b"connection" in headers or b"proxy-connection" in headers:
            http11 = parser.get_http_version() == "1.1"
        else:
            # llhttp takes HTTP/0.9, 1.0, 1.1 and 2.0 request lines, and without these two fields keeps
            # a request alive exactly when it is HTTP/1.1: the version needs no string of its own
            # (get_http_version formats one: ~2.3k instructions of the ~260k per proxied request).
            http11 = keep_alive
        request = Request(self, parser.get_method().decode(), self._url, headers, http11)
        request.keep_alive = keep_alive
        self.request = request
        self._in_head = False
        self._head_size = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            request._too_large = True
        elif self._headers.get(b"expect", b"").lower() == b"100-continue":
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.current is None:
            self._start(request)
        else:
            self.queue.append(request)
            if len(self.queue) >= MAX_PIPELINED and self._reading:
                self._pause_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None:
            self._reading = False
            self.transport.pause_reading()

    def _head_timeout(self) -> None:
        """A request's head did not arrive within header_timeout of its first byte: 408, closed."""
        self._head_timer = None
        if self.closed or self.request is not None:
            return
        timeout = self.server.limits.header_timeout
        if not self._reading:  # the server paused reading (pipelined requests wait): not the client's doing
            self._head_timer = self.loop.call_later(timeout, self._head_timeout)
            return
        log.warning(
            "client %s sent %d bytes of a request head in %g s, not all of it: closed (slow headers)",
            self.peer(),
            self._head_size,
            timeout,
        )
        self._bad(408, f"the request line and headers did not arrive within {timeout:g} s")

    def peer(self) -> str:
        """The client's address, for log lines."""
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"

    def on_body(self, body: bytes) -> None:
        request = self.request
        if request is not None:
            request._feed(body)
            # A pipelined request's body waits in memory until its turn: at most PIPELINE_BYTES.
            if request is not self.current and request._size > PIPELINE_BYTES and self._reading:
                self._pause_reading()

    def on_message_complete(self) -> None:
        if self.request is not None:
            self.request._complete()
            self.request = None

    # writing
    def send(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.sent = True
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the client has taken the buffered answer down to WRITE_LOW; a client that does
        not within `send_timeout` seconds (a slow reader) has its connection cut."""
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()
        timeout = self.server.limits.send_timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._drain), timeout)
        except TimeoutError:
            buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
            log.warning(
                "client %s took less than %d bytes of its answer in %g s (%d bytes waiting): connection"
                " cut (slow reader)",
                self.peer(),
                WRITE_HIGH - WRITE_LOW,
                timeout,
                buffered,
            )
            self.server.slow_readers_cut += 1
            self.abort()
            raise ConnectionResetError("the client read too slowly: connection cut") from None

    def _bad(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Answer `status` (unless an answer is under way) and close the connection."""
        if self.current is None and not self.sent and not self.closed and self.transport is not None:
            type_ = "service_unavailable" if status >= 500 else "invalid_request_error"
            error = {"message": message, "type": type_, "param": None, "code": status}
            body = json.dumps({"error": error}).encode()
            head = {"Content-Type": "application/json", "Connection": "close", **(headers or {})}
            self.transport.write(_head(status, head, b"Content-Length: %d\r\n" % len(body)) + body)
        self.close()

    def abort(self) -> None:
        """Close now, dropping what the client has not taken (close would wait for it to)."""
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _arm_idle(self) -> None:
        """The connection is idle from now; one timer per connection checks it (not one per request)."""
        self.idle_since = self.loop.time()
        if self._idle is None:
            self._idle = self.loop.call_later(self.server.keepalive_timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        if self.closed:
            return
        left = self.server.keepalive_timeout - (self.loop.time() - self.idle_since)
        if self.current is None and left <= 0.001:
            self.close()
        else:
            wait = left if self.current is None else self.server.keepalive_timeout  # busy: look again later
            self._idle = self.loop.call_later(wait, self._idle_timeout)

    # requests
    def _start(self, request: Request) -> None:
        """Put `request` in flight: the connection's task answers it (started with the first request,
        the task then waits for the next one: one task per connection, not one per request)."""
        self.sent = False
        self.current = request
        if self.task is None:
            self.task = self.loop.create_task(self._serve())
        elif self._next is not None:  # the task waits for a request: this one
            self._next.set_result(None)
            self._next = None

    async def _serve(self) -> None:
        """The connection's requests in order, for as long as it is kept alive; a lost connection
        cancels this task, whatever it is waiting for (connection_lost)."""
        try:
            while True:
                if self.current is None:
                    self._next = self.loop.create_future()
                    await self._next
                elif not await self._answer(self.current):
                    return
        finally:
            self.task = None

    async def _answer(self, request: Request) -> bool:
        """Answer `request`; False when the connection is closed (or closing) after it."""
        try:
            response = await self.server.respond(request)
            if not isinstance(response, StreamResponse) or response._conn is None:
                head = request.method == "HEAD"
                body = response.body
                tail = b"Content-Length: %d\r\n" % len(body)
                if not request.keep_alive:
                    tail += b"Connection: close\r\n"
                self.send(_head(response.status, response.headers, tail) + (b"" if head else body))
                if self.paused:  # a whole answer larger than WRITE_HIGH: the client must take it
                    await self.drain()
            elif not response._ended:
                await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            self.current = None
            self.close()
            return False
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            self.current = None
            if not self.sent:
                self._bad(500, "internal error")
            self.close()
            return False
        self.current = None
        self.sent = False
        if self.closed:
            return False
        if not request.keep_alive:
            self.close()
            return False
        if self.queue:
            self._start(self.queue.popleft())
        else:
            self._arm_idle()
        if not self._reading and len(self.queue) < MAX_PIPELINED // 2 and self.transport is not None:
            self._reading = True
            self.transport.resume_reading()
        return True


class Server:
    """The routes, the limits, and the open connections (`shutdown` ends them)."""

    def __init__(
        self,
        routes: dict[tuple[str, str], Handler],
        *,
        max_body: int,
        keepalive_timeout: float = 75,
        limits: Limits = Limits(),
    ):
        self.routes = dict(routes)
        for (method, path), handler in routes.items():
            if method == "GET":
                self.routes.setdefault(("HEAD", path), handler)
        self.paths = {path for _, path in self.routes}
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.limits = limits
        self.connections: set[_Connection] = set()
        self.refused_connections = 0  # connections refused beyond limits.max_connections
        self.slow_readers_cut = 0
        self.loop = asyncio.get_running_loop()

    async def respond(self, request: Request) -> Response:
        handler = self.routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        if request.path not in self.paths:
            return json_response({"error": {"message": "not found", "type": "not_found_error"}}, 404)
        allow = ", ".join(sorted(m for m, p in self.routes if p == request.path))
        return json_response(
            {"error": {"message": f"method {request.method} not allowed", "type": "invalid_request_error"}},
            405,
            {"Allow": allow},
        )

    async def listen(
        self, host: str, port: int, backlog: int = 1024, tls: ssl.SSLContext | None = None
    ) -> asyncio.Server:
        """Serve on `host:port`; with `tls`, HTTPS (a handshake must finish within header_timeout)."""
        return await self.loop.create_server(
            lambda: _Connection(self),
            host,
            port,
            backlog=backlog,
            reuse_address=True,
            ssl=tls,
            ssl_handshake_timeout=self.limits.header_timeout if tls is not None else None,
        )

    async def shutdown(self) -> None:
        """Cancel the requests still in flight (their clients are still connected: the gateway counts
        them as cut off by the shutdown), then close every connection."""
        tasks = [c.task for c in self.connections if c.current is not None and c.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for conn in list(self.connections):
            conn.close()
