"""serving.server over real sockets: routing, keep-alive and pipelining, bodies (chunked, too large,
100-continue), whole and streamed answers, HTTP/1.0, malformed requests, and a client that hangs up
cancelling its handler."""

from __future__ import annotations

import asyncio
import contextlib

import httptools
import pytest

from llmops.serving.server import (
    MAX_HEAD,
    MAX_HEADERS,
    MAX_PIPELINED,
    PIPELINE_BYTES,
    WRITE_HIGH,
    BodyTimeout,
    Limits,
    Request,
    Response,
    Server,
    StreamResponse,
    TooLarge,
    json_response,
)


async def _echo(request: Request) -> Response:
    try:
        body = await request.read()
    except TooLarge:
        return json_response({"error": "too large"}, 413)
    return Response(
        body, headers={"Content-Type": "text/plain", "X-Path": request.path + "?" + request.query}
    )


async def _stream(request: Request) -> Response:
    resp = StreamResponse(200, {"Content-Type": "text/event-stream"})
    resp.send_headers_now = request.headers.get("x-now") == "1"
    await resp.prepare(request)
    await resp.write(b"data: 1\n\n")
    await resp.write_eof(b"data: [DONE]\n\n")
    return resp


async def _get(request: Request) -> Response:
    return json_response({"ok": True})


@contextlib.asynccontextmanager
async def serving(routes=None, max_body=1024, keepalive_timeout=75.0, limits=None):
    cancelled = asyncio.Event()

    async def hang(request: Request) -> Response:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(b"late")

    server = Server(
        routes
        or {
            ("POST", "/echo"): _echo,
            ("POST", "/stream"): _stream,
            ("GET", "/get"): _get,
            ("POST", "/hang"): hang,
        },
        max_body=max_body,
        keepalive_timeout=keepalive_timeout,
        limits=limits or Limits(),
    )
    listener = await server.listen("127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield port, cancelled
    finally:
        listener.close()
        await server.shutdown()


async def _exchange(port: int, data: bytes, until: bytes = b"", close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if close:
        writer.write_eof()
    out = b""
    try:
        while until not in out or not until:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            out += chunk
            if until and out.count(until) >= 1 and until in out:
                break
    finally:
        writer.close()
    return out


def run(coro):
    return asyncio.run(coro)


def test_routes_keep_alive_and_pipelining():
    async def main():
        async with serving() as (port, _):
            two = (
                b"POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nbye"
            )
            out = await _exchange(port, two, b"\r\n\r\nbye")
            assert out.count(b"HTTP/1.1 200 OK") == 2
            assert b"X-Path: /echo?x=1" in out and out.index(b"hello") < out.index(b"bye")
            assert b"Content-Length: 5\r\n" in out and b"Date: " in out
            out = await _exchange(port, b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", b"}")
            assert out.startswith(b"HTTP/1.1 404 ")
            out = await _exchange(port, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n", b"}")
            assert out.startswith(b"HTTP/1.1 405 ") and b"Allow: POST" in out
            out = await _exchange(port, b"HEAD /get HTTP/1.1\r\nHost: a\r\n\r\n", b"\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\n")
            out = await _exchange(port, b"GET http://a/get HTTP/1.1\r\nHost: a\r\n\r\n", b"}")
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b'{"ok": true}')

    run(main())


def test_bodies_chunked_too_large_and_100_continue():
    async def main():
        async with serving(max_body=8) as (port, _):
            head = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            chunked = head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            out = await _exchange(port, chunked, b"abcde")
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"abcde")
            big = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\n123456789"
            out = await _exchange(port, big, b"}")
            assert out.startswith(b"HTTP/1.1 413 ")
            big = head + b"9\r\n123456789\r\n0\r\n\r\n"
            assert (await _exchange(port, big, b"}")).startswith(b"HTTP/1.1 413 ")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
            )
            assert (
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
            )
            writer.write(b"ok")
            assert (await asyncio.wait_for(reader.readuntil(b"ok"), 5)).startswith(b"HTTP/1.1 200 ")
            writer.close()

    run(main())


@pytest.mark.parametrize("now", ["0", "1"])
def test_stream_chunked_and_http10(now):
    async def main():
        async with serving() as (port, _):
            req = f"POST /stream HTTP/1.1\r\nHost: a\r\nX-Now: {now}\r\nContent-Length: 0\r\n\r\n".encode()
            out = await _exchange(port, req, b"0\r\n\r\n")
            assert b"Transfer-Encoding: chunked" in out
            assert out.endswith(b"9\r\ndata: 1\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
            req = b"POST /stream HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
            out = await _exchange(port, req)  # until the server closes
            assert b"Connection: close" in out and out.endswith(b"\r\n\r\ndata: 1\n\ndata: [DONE]\n\n")

    run(main())


@pytest.mark.parametrize("version", ["0.9", "1.0", "1.1", "2.0"])
@pytest.mark.parametrize(
    "fields",
    [
        "",
        "Connection: close\r\n",
        "connection: Keep-Alive\r\n",
        "Proxy-Connection: close\r\n",
        "PROXY-CONNECTION: keep-alive\r\n",
        "Connection: foo\r\n",
    ],
)
def test_http_version_and_keep_alive_as_the_parser_reads_them(version, fields):
    """Request.http11 and keep_alive, derived without the parser's version string where no connection
    field is sent, agree with llhttp's version and keep-alive for every version it takes."""
    read = []

    class Head:
        def on_headers_complete(self):
            read.append((parser.get_http_version() == "1.1", parser.should_keep_alive()))

    raw = f"GET /get HTTP/{version}\r\nHost: a\r\n{fields}\r\n".encode()
    parser = httptools.HttpRequestParser(Head())
    parser.feed_data(raw)
    (expected,) = read
    seen = []

    async def version_of(request: Request) -> Response:
        seen.append((request.http11, request.keep_alive))
        return json_response({"ok": True})

    async def main():
        async with serving({("GET", "/get"): version_of}) as (port, _):
            await _exchange(port, raw, b"}")

    run(main())
    assert seen == [expected]


def test_malformed_request_is_400_and_closed():
    async def main():
        async with serving() as (port, _):
            out = await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in out
            huge = b"GET /get HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * (MAX_HEAD + 1)
            out = await _exchange(port, huge)  # the head never ends: 431 and closed
            assert out.startswith(b"HTTP/1.1 431 ") and b"Connection: close" in out

    run(main())


@pytest.mark.parametrize("state", ["body", "handler"])
def test_client_hang_up_cancels_the_handler(state):
    """While the handler waits for the rest of the body, or for anything else, a hang-up cancels it."""

    async def main():
        seen, body_cancelled = asyncio.Event(), asyncio.Event()

        async def slow_body(request: Request) -> Response:
            seen.set()
            try:
                await request.read()
            except asyncio.CancelledError:
                body_cancelled.set()
                raise
            return Response(b"all")

        routes = {("POST", "/body"): slow_body} if state == "body" else None
        async with serving(routes) as (port, cancelled):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            path = "/body" if state == "body" else "/hang"
            writer.write(f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12".encode())
            if state == "body":
                await asyncio.wait_for(seen.wait(), 5)
            else:
                await asyncio.sleep(0.2)
            writer.close()
            await asyncio.wait_for((cancelled if state == "handler" else body_cancelled).wait(), 5)

    run(main())


def test_requests_in_turn_on_one_connection_and_a_hang_up_between_them():
    """A kept-alive connection's requests, each sent after the answer to the one before: all answered
    (one task per connection waits for the next); a hang-up between two requests leaves no task."""

    async def main():
        async with serving() as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(3):
                writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n%04d" % i)
                out = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n%04d" % i), 5)
                assert out.startswith(b"HTTP/1.1 200 ")
            writer.close()
            for _ in range(500):  # the server sees the close on a later turn of the loop
                if asyncio.all_tasks() == {asyncio.current_task()}:
                    break
                await asyncio.sleep(0.01)
            assert asyncio.all_tasks() == {asyncio.current_task()}

    run(main())


def test_header_fields_any_case_repeated_and_one_alone():
    seen = {}

    async def fields(request: Request) -> Response:
        seen.update(one=request.header("x-a"), none=request.header("x-none", "-"))
        seen.update(all=dict(request.headers))
        return Response(b"ok")

    async def main():
        async with serving({("GET", "/fields"): fields}) as (port, _):
            head = b"GET /fields HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-B: \xe9\r\n\r\n"
            assert (await _exchange(port, head, b"ok")).startswith(b"HTTP/1.1 200 ")

    run(main())
    assert seen == {"one": "1, 2", "none": "-", "all": {"host": "h", "x-a": "1, 2", "x-b": "\xe9"}}


def test_idle_connection_closes_after_the_keepalive_timeout():
    async def main():
        async with serving(keepalive_timeout=0.3) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /get HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"}"), 5)).startswith(b"HTTP/1.1 200 ")
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server when idle
            writer.close()

    run(main())


def test_many_pipelined_requests_are_all_answered_in_order():
    """More pipelined requests than MAX_PIPELINED: reading pauses and resumes, none is lost."""

    async def main():
        async with serving() as (port, _):
            n = MAX_PIPELINED * 2 + 3
            data = b"".join(
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n%04d" % i for i in range(n)
            )
            out = await _exchange(port, data, b"\r\n\r\n%04d" % (n - 1))
            bodies = [int(part[:4]) for part in out.split(b"\r\n\r\n")[1:]]
            assert bodies == list(range(n))

    run(main())


def test_limits_on_slow_and_flooding_clients():
    """Too many header fields (431), a head or a body that stops coming (408), connections beyond
    max_connections (503 with Retry-After)."""

    async def slow_body(request: Request) -> Response:
        try:
            await request.read()
        except BodyTimeout as e:
            return json_response({"error": str(e)}, 408)
        return Response(b"all in")

    routes = {("POST", "/body"): slow_body, ("GET", "/get"): _get}
    limits = Limits(header_timeout=0.3, body_timeout=0.3, max_connections=2)

    async def main():
        async with serving(routes, limits=limits) as (port, _):
            flood = b"GET /get HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n"
            assert (await _exchange(port, flood)).startswith(b"HTTP/1.1 431 ")
            ok = b"GET /get HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADERS - 1) + b"\r\n"
            assert (await _exchange(port, ok, b"}")).startswith(b"HTTP/1.1 200 ")
            out = await _exchange(port, b"GET /get HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            assert out.startswith(b"HTTP/1.1 408 ")
            out = await _exchange(port, b"POST /body HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
            assert out.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in out
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await asyncio.sleep(0.05)
            out = await _exchange(port, b"GET /get HTTP/1.1\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in out
            for _, writer in held:
                writer.close()

    run(main())


def test_a_slow_reader_is_cut_and_buffers_stay_bounded():
    """A client that takes nothing: the stream's writer waits once WRITE_HIGH is buffered, and the
    connection is cut after send_timeout."""
    outcome: dict = {}

    async def big(request: Request) -> Response:
        resp = StreamResponse(200, {"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            for _ in range(100_000):
                await resp.write(b"x" * 1024)
                outcome["buffered"] = max(
                    outcome.get("buffered", 0), request._conn.transport.get_write_buffer_size()
                )
        except ConnectionError:
            outcome["cut"] = True
        return resp

    async def main():
        async with serving({("GET", "/big"): big}, limits=Limits(send_timeout=0.5)) as (port, _):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /big HTTP/1.1\r\n\r\n")
            for _ in range(100):
                await asyncio.sleep(0.05)
                if outcome.get("cut"):
                    break
            writer.close()

    run(main())
    assert outcome.get("cut") and outcome["buffered"] <= WRITE_HIGH + 2048, outcome


def test_pipelined_bodies_pause_reading():
    """A pipelined request's body beyond PIPELINE_BYTES waits in the socket, not in memory."""

    async def hang(request: Request) -> Response:
        await asyncio.sleep(60)
        return Response(b"late")

    async def main():
        server = Server({("POST", "/hang"): hang, ("POST", "/echo"): _echo}, max_body=8 * PIPELINE_BYTES)
        listener = await server.listen("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            body = b"y" * (4 * PIPELINE_BYTES)
            data = b"POST /hang HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
            data += b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            await asyncio.sleep(0.5)
            (conn,) = server.connections
            assert conn.request is not None and not conn._reading
            assert PIPELINE_BYTES < conn.request._size < PIPELINE_BYTES + (1 << 20)
            writer.close()
        finally:
            listener.close()
            await server.shutdown()

    run(main())
