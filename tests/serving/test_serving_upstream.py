"""The gateway's upstream client (llmops/serving/upstream.py) against real servers on loopback: aiohttp's
server, a TLS one with a certificate from a test CA, and raw asyncio servers where a test needs a
peer that misbehaves on cue (closes a kept-alive connection, cuts a body short)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

pytest.importorskip("httptools")

from aiohttp import web
from yarl import URL

from llmops.dev.cluster import free_port
from llmops.serving.upstream import Upstream, UpstreamConnectError, UpstreamDisconnected

HEADERS = {"Content-Type": "application/json"}


async def aiohttp_server(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return runner, port


def test_keep_alive_plain_and_streamed_answers():
    peers: list[object] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername"))
        body = await request.read()
        if request.query.get("stream"):
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "X-Seen": request.headers["X-Id"]}
            )
            await resp.prepare(request)
            for i in range(3):
                await resp.write(b"data: %d\n\n" % i)
                await asyncio.sleep(0.01)
            await resp.write_eof()
            return resp
        return web.Response(body=body[::-1], headers={"X-Seen": request.headers["X-Id"]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/echo", echo)
        runner, port = await aiohttp_server(app)
        client = Upstream(connect_timeout=5, total_timeout=30)
        try:
            for i in range(3):
                r = await client.request(
                    URL(f"http://127.0.0.1:{port}/v1/echo"), b"abc%d" % i, {"X-Id": str(i)}
                )
                assert (r.status, r.headers["x-seen"], await r.read()) == (200, str(i), b"%dcba" % i)
                r.release()
            r = await client.request(URL(f"http://127.0.0.1:{port}/v1/echo?stream=1"), b"", {"X-Id": "s"})
            assert r.headers["content-type"] == "text/event-stream"
            assert r.header("content-type", "") == "text/event-stream" and r.header("x-none", "d") == "d"
            assert b"".join([c async for c in r.iter_any()]) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            r.release()
            assert len(set(peers)) == 1  # one connection, kept alive for all four
        finally:
            client.close()
            await runner.cleanup()

    asyncio.run(main())


async def raw_server(handle) -> tuple[asyncio.Server, int]:
    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, port


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
    )
    return await reader.readexactly(length)


def test_a_kept_alive_connection_closed_by_the_replica_is_retried_once_fresh():
    """The replica answers once, then closes that connection when the next request arrives on it
    (as a server does with an idle one): the request goes again on a new connection."""
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        first = len(connections) == 1
        body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        if first:
            await reader.read(1)  # the second request's first byte: close without answering
            writer.close()

    async def main() -> None:
        server, port = await raw_server(handle)
        client = Upstream(connect_timeout=5, total_timeout=30)
        url = URL(f"http://127.0.0.1:{port}/x")
        async with server:
            for body in (b"one", b"two"):
                r = await client.request(url, body, HEADERS)
                assert await r.read() == body
                r.release()
        assert len(connections) == 2
        client.close()

    asyncio.run(main())


def test_errors_refused_cut_short_and_timeout():
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def main() -> None:
        client = Upstream(connect_timeout=5, total_timeout=0.5)
        with pytest.raises(UpstreamConnectError):
            await client.request(URL(f"http://127.0.0.1:{free_port()}/x"), b"", HEADERS)
        server, port = await raw_server(cut_short)
        async with server:
            r = await client.request(URL(f"http://127.0.0.1:{port}/x"), b"{}", HEADERS)
            assert r.status == 200
            with pytest.raises(UpstreamDisconnected):
                await r.read()
            r.release()
        server, port = await raw_server(silent)
        async with server:
            with pytest.raises(TimeoutError):
                await client.request(URL(f"http://127.0.0.1:{port}/x"), b"{}", HEADERS)
        client.close()

    asyncio.run(main())


def test_close_drops_the_connection_the_replica_sees_it():
    seen = asyncio.Event

    async def main() -> None:
        closed = seen()

        async def slow(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b"first")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                closed.set()
                raise
            return resp

        app = web.Application()
        app.router.add_post("/slow", slow)
        runner, port = await aiohttp_server(app)
        client = Upstream(connect_timeout=5, total_timeout=30)
        r = await client.request(URL(f"http://127.0.0.1:{port}/slow"), b"", HEADERS)
        async for chunk in r.iter_any():
            assert chunk == b"first"
            break
        r.close()
        await asyncio.wait_for(closed.wait(), 10)
        client.close()
        await runner.cleanup()

    asyncio.run(main())


def test_https_replica(tmp_path):
    from llmops.certs import common_name, issue_certificate, new_ca, pem, write_key

    ca, ca_key = new_ca("test-ca")
    cert, key = issue_certificate(ca, ca_key, common_name("replica"), server_names=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(pem(cert))
    write_key(tmp_path / "tls.key", key)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    trusted = ssl.create_default_context(cadata=pem(ca).decode())

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello over TLS")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hello", hello)
        runner, port = await aiohttp_server(app, server_ctx)
        url = URL(f"https://127.0.0.1:{port}/hello")
        try:
            client = Upstream(connect_timeout=5, total_timeout=30, ssl_context=trusted)
            for _ in range(2):  # the second one on the kept-alive TLS connection
                r = await client.request(url, b"", HEADERS)
                assert await r.read() == b"hello over TLS"
                r.release()
            client.close()
            untrusted = Upstream(connect_timeout=5, total_timeout=30)  # the system CAs do not know it
            with pytest.raises(UpstreamConnectError):
                await untrusted.request(url, b"", HEADERS)
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_release_with_drain_returns_the_connection_once_the_answer_ends():
    """A stream whose last event is read before the body's end: released with `drain`, its connection
    goes back to the pool when the end arrives, and the next request uses it."""
    peers: list[object] = []

    async def main() -> None:
        async def events(request: web.Request) -> web.StreamResponse:
            peers.append(request.transport.get_extra_info("peername"))
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b"data: [DONE]\n\n")
            await asyncio.sleep(0.2)  # the end of the chunked body comes later
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_post("/events", events)
        runner, port = await aiohttp_server(app)
        client = Upstream(connect_timeout=5, total_timeout=30)
        url = URL(f"http://127.0.0.1:{port}/events")
        try:
            r = await client.request(url, b"", HEADERS)
            async for chunk in r.iter_any():
                assert chunk == b"data: [DONE]\n\n"
                break
            r.release(drain=5)
            r.release()  # a second release (the caller's finally) changes nothing
            while not client._idle.get(("http", "127.0.0.1", port)):
                await asyncio.sleep(0.05)
            again = await client.request(url, b"", HEADERS)
            assert await again.read() == b"data: [DONE]\n\n"
            again.release()
            assert len(set(peers)) == 1
        finally:
            client.close()
            await runner.cleanup()

    asyncio.run(main())


def test_total_timeout_covers_the_body_and_counts_from_each_request():
    """A body that stalls after the headers fails with TimeoutError; on a kept-alive connection the
    total timeout counts from each request's start, not from the connection's first request."""
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while body := await read_request(reader):
            if body == b"stall":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
                await writer.drain()
                await reader.read()  # until the client drops the connection
                return
            if body == b"late":
                await asyncio.sleep(1.0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def main() -> None:
        server, port = await raw_server(handle)
        client = Upstream(connect_timeout=5, total_timeout=2)
        url = URL(f"http://127.0.0.1:{port}/x")
        async with server:
            r = await client.request(url, b"soon", HEADERS)
            assert await r.read() == b"soon"
            r.release()
            await asyncio.sleep(1.5)
            # Answered 2.5 s after the first request began, 1 s after its own: in time.
            r = await client.request(url, b"late", HEADERS)
            assert await r.read() == b"late"
            r.release()
            assert len(connections) == 1
            r = await client.request(url, b"stall", HEADERS)
            with pytest.raises(TimeoutError):
                await r.read()
            r.release()
        client.close()

    asyncio.run(main())


def test_a_drained_stream_whose_end_never_comes_is_dropped_after_drain():
    """release(drain=...) on a stream whose end does not come: the connection is dropped after
    `drain` seconds (not after the longer total timeout) and never goes back to the pool."""

    async def main() -> None:
        dropped = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\ne\r\ndata: [DONE]\n\n\r\n")
            await writer.drain()
            await reader.read()  # b"" once the client drops the connection
            dropped.set()

        server, port = await raw_server(handle)
        client = Upstream(connect_timeout=5, total_timeout=60)
        async with server:
            r = await client.request(URL(f"http://127.0.0.1:{port}/x"), b"{}", HEADERS)
            assert await r.read_some() == b"data: [DONE]\n\n"
            r.release(drain=0.2)
            await asyncio.wait_for(dropped.wait(), 10)
            assert not client._idle.get(("http", "127.0.0.1", port))
        client.close()

    asyncio.run(main())
