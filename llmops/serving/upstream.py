"""The gateway's HTTP/1.1 client to its replicas: a keep-alive connection pool on asyncio protocols,
with httptools (llhttp, the parser uvicorn uses) reading the answers.

Why not aiohttp's client: measured on the gateway's hot path (bench/gateway_overhead.py --canned),
aiohttp's request and response objects, timers and stream readers were most of the gateway's added
latency per request; this client does only what a proxy to vLLM needs:

- `Upstream.request(url, body, headers)` sends one request and returns an `UpstreamResponse` once
  the status line and headers are in; its body is read with `read()`, `read_some()` or `iter_any()`.
- Connections are kept alive per (scheme, host, port) and reused, most recently used first; one
  that the replica closed while idle leaves the pool when the close arrives. A request sent on a
  reused connection that is closed before a single byte of the answer arrived is sent once more on
  a fresh connection (the replica closed it idle: nothing was processed).
- https: a TLS connection with the default context (system CAs, hostname checked).
- Errors: `UpstreamConnectError` (nothing reached the replica: refused, unreachable, DNS, TLS),
  `UpstreamDisconnected` (the connection broke or the body ended early), `TimeoutError` (connect
  beyond `connect_timeout`, or the whole request beyond `total_timeout`); all are `UpstreamError`.
- Flow control: at most READ_HIGH bytes of an answer wait unread in the gateway; beyond that the
  connection stops reading (TCP pushes back on the replica) until the gateway reads on, so a client
  that reads slowly holds the replica's answer back, not the gateway's memory.
- `UpstreamResponse.close()` drops the connection at once (the replica sees it close: vLLM aborts
  the request); `release()` returns it to the pool if the answer was read to its end.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator

import httptools
from yarl import URL

READ_HIGH = 64 << 10  # answer bytes received and not yet read by the gateway before reading pauses


class UpstreamError(Exception):
    """The replica could not be asked or did not answer properly."""


class UpstreamConnectError(UpstreamError):
    """No connection to the replica: the request was not sent."""


class UpstreamDisconnected(UpstreamError):
    """The connection broke before the answer was complete."""


Key = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one answer at a time."""

    def __init__(self, pool: Upstream, key: Key, loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.key, self.loop = pool, key, loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.reused = False
        self.deadline = 0.0  # loop time by which the answer in progress must be complete (`watch`)
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pool._forget(self)
        if self.response is not None:
            self.response._broken(exc)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: the connection is not reusable
            self.abort()
            return
        self.response._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.response._broken(UpstreamDisconnected("the replica switched protocols"))
            self.abort()
        except httptools.HttpParserError as e:
            self.response._broken(UpstreamDisconnected(f"malformed answer: {e}"))
            self.abort()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.status = self.parser.get_status_code()
        self.response._keep_alive = self.parser.should_keep_alive()
        if not self.response._headers.done():
            self.response._headers.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response._finish()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def watch(self, seconds: float) -> None:
        """The answer in progress must be complete within `seconds`, else it fails with TimeoutError
        and the connection is dropped. One timer per connection checks it, moved only when it fires
        or when an earlier deadline is set: a call_later and a cancel per request cost ~6k
        instructions of the gateway's ~265k per proxied request (callgrind, 2026-12-01)."""
        self.deadline = deadline = self.loop.time() + seconds
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        response = self.response
        if response is None or response._complete or self.closed:
            return
        if self.deadline - self.loop.time() > 0.001:  # a later request's deadline: look again then
            self._timer = self.loop.call_at(self.deadline, self._expire)
            return
        response._broken(TimeoutError("the replica did not answer in time"))
        response.close()


class UpstreamResponse:
    """The answer to one request: `status`, `headers` (names lower-case), then the body."""

    __slots__ = (
        "_chunks",
        "_complete",
        "_connection",
        "_draining",
        "_error",
        "_header_map",
        "_headers",
        "_keep_alive",
        "_loop",
        "_paused",
        "_raw_headers",
        "_received",
        "_unread",
        "_waiter",
        "status",
    )

    def __init__(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.status = 0
        self._loop = loop
        self._connection: _Connection | None = connection
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: asyncio.Future[None] = loop.create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._keep_alive = False
        self._received = False
        self._header_map: dict[str, str] | None = None
        self._draining = False
        self._unread = 0  # bytes in _chunks
        self._paused = False  # the connection stopped reading: READ_HIGH bytes wait unread

    @property
    def headers(self) -> dict[str, str]:
        if self._header_map is None:
            self._header_map = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._raw_headers
            }
        return self._header_map

    def header(self, name: str, default: str) -> str:
        """The value of header `name` (lower-case; the last one if repeated, as in `headers`), or
        `default`, without decoding the others."""
        key = name.encode("latin-1")
        for k, v in reversed(self._raw_headers):
            if k.lower() == key:
                return v.decode("latin-1")
        return default

    # fed by the connection
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        if self._draining:  # released before its end: the rest is not wanted
            return
        self._chunks.append(data)
        self._unread += len(data)
        if self._unread > READ_HIGH and not self._paused:
            connection = self._connection
            if connection is not None and connection.transport is not None:
                self._paused = True
                connection.transport.pause_reading()
        self._wake()

    def _taken(self) -> None:
        """The gateway read what was buffered: read from the replica again."""
        self._unread = 0
        if self._paused:
            self._paused = False
            connection = self._connection
            if connection is not None and connection.transport is not None and not connection.closed:
                connection.transport.resume_reading()

    def _finish(self) -> None:
        self._complete = True
        self._wake()
        if self._draining:
            self._draining = False
            self.release()

    def _broken(self, exc: BaseException | None) -> None:
        if self._complete:
            return
        if not isinstance(exc, (UpstreamError, TimeoutError)):
            exc = UpstreamDisconnected(f"the replica closed the connection: {exc or 'end of stream'}")
        self._error = exc
        if not self._headers.done():
            self._headers.set_exception(exc)
            self._headers.exception()  # retrieved: a request cancelled meanwhile logs nothing
        self._wake()

    # read by the gateway
    def buffered(self) -> bool:
        """True if some of the body (or its end) has arrived and not been read yet."""
        return bool(self._chunks) or self._complete or self._error is not None

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_some(self) -> bytes:
        """What has arrived of the body since the last read, once something has; b"" at its end.

        The gateway's stream loop calls this rather than iterating `iter_any`: an async generator
        left before its end is closed by a task the event loop creates for it (and each one is
        registered in the loop's weak set), a cost per streamed request."""
        while True:
            if self._chunks:
                if len(self._chunks) == 1:
                    data = self._chunks.popleft()
                else:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                self._taken()
                return data
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body, in pieces as they arrive (`read_some` until it returns b"")."""
        while data := await self.read_some():
            yield data

    async def read(self) -> bytes:
        """The whole body."""
        if self._complete:  # all in already (a short answer): no iteration
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._taken()
            return data
        chunks = []
        while data := await self.read_some():
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        """Drop the connection now, whatever was read (the replica sees its request abandoned)."""
        if self._connection is not None:
            self._connection.response = None
            self._connection.abort()
            self._connection = None

    def release(self, *, drain: float = 0) -> None:
        """Give the connection back to the pool if the answer was complete, else drop it.

        `drain` > 0: if the rest of the answer is still on its way (the last bytes of a stream after
        its last event), the connection goes back to the pool when they have arrived, or is dropped
        after `drain` seconds; the caller does not wait for them.
        """
        if self._draining:  # already on its way back to the pool
            return
        connection = self._connection
        if connection is None:
            return
        if drain > 0 and not self._complete and self._error is None and self._keep_alive:
            self._draining = True
            self._chunks.clear()
            self._taken()
            connection.watch(drain)
            return
        self._taken()  # a connection never goes back to the pool paused
        self._connection = None
        connection.response = None
        if self._complete and self._keep_alive and not connection.closed:
            connection.parser = httptools.HttpResponseParser(connection)
            connection.pool._put(connection)
        else:
            connection.abort()


class Upstream:
    """The pool of connections to every replica, and `request()`."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        total_timeout: float,
        idle_timeout: float = 60,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Timeouts in seconds; `ssl_context` for https replicas (default: the system's CAs)."""
        self.connect_timeout, self.total_timeout = connect_timeout, total_timeout
        self.idle_timeout = idle_timeout
        self._idle: dict[Key, collections.deque[tuple[_Connection, float]]] = {}
        self._ssl = ssl_context
        # Per (method, url): the pool key and the request line and Host header, encoded once.
        self._heads: dict[tuple[str, URL], tuple[Key, bytes]] = {}

    def _forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.key)
        if idle:
            for item in idle:
                if item[0] is connection:
                    idle.remove(item)
                    break

    def _put(self, connection: _Connection) -> None:
        loop = connection.loop
        self._idle.setdefault(connection.key, collections.deque()).append((connection, loop.time()))

    def _take(self, key: Key, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = loop.time()
        while idle:
            connection, since = idle.pop()
            if connection.closed or now - since > self.idle_timeout:
                connection.abort()
                continue
            connection.reused = True
            return connection
        return None

    async def _connect(self, key: Key, loop: asyncio.AbstractEventLoop) -> _Connection:
        scheme, host, port = key
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, key, loop), host, port, ssl=context
                )
        except TimeoutError:
            raise
        except (OSError, ssl.SSLError) as e:
            raise UpstreamConnectError(f"cannot connect to {scheme}://{host}:{port}: {e}") from e
        return connection

    async def request(
        self, url: URL, body: bytes, headers: dict[str, str], method: str = "POST"
    ) -> UpstreamResponse:
        """Send `method url` with `body` (Content-Length set here); returns once the headers are in."""
        if (found := self._heads.get((method, url))) is None:
            key = (url.scheme, url.raw_host or "", url.port or (443 if url.scheme == "https" else 80))
            line = f"{method} {url.raw_path_qs} HTTP/1.1\r\nHost: {url.raw_authority}\r\n".encode("latin-1")
            if len(self._heads) >= 4096:  # replicas come and go (pod addresses): forget the old ones
                self._heads.clear()
            found = self._heads[(method, url)] = (key, line)
        key, line = found
        fields = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
        message = b"%s%sContent-Length: %d\r\n\r\n%s" % (line, fields.encode("latin-1"), len(body), body)
        loop = asyncio.get_running_loop()
        for _ in range(2):
            connection = self._take(key, loop) or await self._connect(key, loop)
            response = UpstreamResponse(connection, loop)
            connection.response = response
            connection.watch(self.total_timeout)
            assert connection.transport is not None
            connection.transport.write(message)
            try:
                await response._headers
                return response
            except UpstreamDisconnected:
                response.close()
                if connection.reused and not response._received:
                    continue  # closed while idle, before our request was read: once more, fresh
                raise
            except BaseException:
                response.close()
                raise
        raise UpstreamDisconnected("the replica closed two connections in a row")

    def close(self) -> None:
        for idle in self._idle.values():
            for connection, _ in idle:
                connection.abort()
        self._idle.clear()
