"""kopf's session: bounded to the watches plus a few connections for requests (operators.main)."""

from __future__ import annotations

import asyncio

import kopf

from llmops.operators import runtime
from llmops.operators.main import REQUEST_CONNECTIONS, bounded_session, connection_limit, default_kinds


def test_the_limit_leaves_room_for_requests_beside_every_watch() -> None:
    kinds = default_kinds()
    watched = runtime.watched_resources(kinds)
    # Every kind and every kind of child is watched; kopf watches CRDs and Namespaces besides.
    assert {("llmops.io", "v1alpha1", k.resource.plural) for k in kinds} <= watched
    assert ("apps", "v1", "deployments") in watched
    assert connection_limit(kinds) == len(watched) + 2 + REQUEST_CONNECTIONS


def test_the_session_carries_the_credentials_and_the_limit() -> None:
    info = kopf.ConnectionInfo(
        server="https://127.0.0.1:6443",
        scheme="Bearer",
        token="marker-token",
        default_namespace="ns",
        insecure=True,
    )

    async def open_and_close() -> kopf.AiohttpSession:
        ctx = bounded_session(info, 33)
        try:
            assert ctx.aiohttp_session.connector is not None
            assert ctx.aiohttp_session.connector.limit == 33
            assert ctx.aiohttp_session.headers["Authorization"] == "Bearer marker-token"
            return ctx
        finally:
            await ctx.aiohttp_session.close()

    ctx = asyncio.run(open_and_close())
    assert (ctx.server, ctx.default_namespace) == ("https://127.0.0.1:6443", "ns")


def test_an_apiserver_that_never_answered_at_start_ends_the_operator_in_one_line(
    monkeypatch, tmp_path
) -> None:
    """kopf ends the operator when its first discovery gives up (about a minute against
    https://127.0.0.1:1, measured by hand); the process says why in one line, exit code 1."""
    import aiohttp
    import pytest

    from llmops.operators import main

    async def gives_up(**_: object) -> None:
        raise aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, True, True, None, None, None),
            OSError(111, "Connect call failed"),
        )

    config = tmp_path / "kubeconfig"  # the line names where the server came from
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: ctx\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.setattr(main.kopf, "operator", gives_up)
    monkeypatch.setattr(main, "build_registry", lambda webhook: None)
    # No logging set-up in the test process (kopf's handlers, our filters on the root's handlers).
    monkeypatch.setattr(main.kopf, "configure", lambda **_: None)
    monkeypatch.setattr(main.logsafe, "install", lambda: None)
    monkeypatch.setattr(main.ReconnectLog, "install", classmethod(lambda cls, handlers=None: []))
    with pytest.raises(SystemExit) as exited:
        main.run(namespaces=["x"], metrics_port=0, health_port=0)
    assert str(exited.value).startswith(
        f"llmops operator: the API server of kubeconfig {config} (context ctx, server https://127.0.0.1:1) "
        "did not answer at start ("
    )
    assert "Cannot connect to host 127.0.0.1:1" in str(exited.value)


def test_listed_and_watched_objects_arrive_without_managed_fields(monkeypatch) -> None:
    """kopf's infinite_watch takes its events from its module's `continuous_watch` by name (the
    wrap depends on it); the wrap drops managedFields and passes everything else as it came."""
    import inspect

    from kopf._cogs.clients import watching

    from llmops.operators.main import wrap_list_and_watch

    assert "continuous_watch(" in inspect.getsource(watching.infinite_watch)
    obj = {"metadata": {"name": "a", "managedFields": [{"manager": "x"}], "labels": {"l": "1"}}, "spec": {}}
    came = [watching.Bookmark.LISTED, {"type": "MODIFIED", "object": obj}, {"type": "ERROR", "object": {}}]

    async def kopfs(**kwargs):
        for event in came:
            yield event

    monkeypatch.setattr(watching, "continuous_watch", kopfs)
    wrap_list_and_watch()
    wrap_list_and_watch()  # once only: the second call finds the wrap

    async def collect() -> list:
        return [e async for e in watching.continuous_watch(settings=None)]

    got = asyncio.run(collect())
    assert got[0] is watching.Bookmark.LISTED and got[2] == {"type": "ERROR", "object": {}}
    assert got[1] == {
        "type": "MODIFIED",
        "object": {"metadata": {"name": "a", "labels": {"l": "1"}}, "spec": {}},
    }


def test_a_list_whose_continue_token_expired_ends_the_stream_so_kopf_lists_again(monkeypatch, caplog) -> None:
    """The next page of a paged list refused with 410 Expired (etcd compacted past the list's revision)
    ends this stream quietly, after the events already given: kopf's infinite_watch then lists again
    from the first page instead of its watcher, and with it the operator, failing. Any other refusal
    still ends the watcher. (kopf's HTTP layer is replaced here: an expired continue token needs an
    etcd compaction between two pages, which the local control plane does every five minutes.)"""
    import pytest
    from kopf._cogs.clients import errors, watching

    from llmops.operators.main import wrap_list_and_watch

    refusal: list[errors.APIClientError] = []

    async def kopfs(**kwargs):
        yield {"type": None, "object": {"metadata": {"name": "first-page", "managedFields": []}}}
        raise refusal[0]

    monkeypatch.setattr(watching, "continuous_watch", kopfs)
    wrap_list_and_watch()

    async def collect() -> list:
        return [e async for e in watching.continuous_watch(settings=None, resource="modeldeployments")]

    expired = {
        "kind": "Status",
        "code": 410,
        "reason": "Expired",
        "message": "The provided continue parameter is too old",
    }
    refusal[:] = [errors.APIClientError(expired, status=410, headers={})]
    with caplog.at_level("WARNING"):
        got = asyncio.run(collect())
    assert got == [{"type": None, "object": {"metadata": {"name": "first-page"}}}]
    assert "the list or watch of modeldeployments was refused as expired" in caplog.text
    assert "continue parameter is too old" in caplog.text

    refusal[:] = [
        errors.APIForbiddenError({"kind": "Status", "code": 403, "message": "no"}, status=403, headers={})
    ]
    with pytest.raises(errors.APIForbiddenError):
        asyncio.run(collect())


def test_kopfs_endless_watch_lists_again_after_an_expired_page(monkeypatch, caplog) -> None:
    """Through kopf's own `infinite_watch` (the loop every watched resource runs): the first listing's
    second page is refused with 410 Expired, the wrapped stream ends, and kopf starts the next
    iteration, which lists from the first page and goes on; the caller sees every event of the
    second listing and no error. (kopf's listing and watch, `continuous_watch`, faked, as above.)"""
    from kopf._cogs.clients import errors, watching
    from kopf._cogs.structs import references

    from llmops.operators.main import wrap_list_and_watch

    calls: list[str] = []

    async def kopfs(**kwargs):
        calls.append(kwargs["resource"].plural)
        yield {"type": None, "object": {"metadata": {"name": f"page-1-of-listing-{len(calls)}"}}}
        if len(calls) == 1:
            expired = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            raise errors.APIClientError(expired, status=410, headers={})
        yield {"type": None, "object": {"metadata": {"name": "page-2-of-listing-2"}}}

    monkeypatch.setattr(watching, "continuous_watch", kopfs)
    wrap_list_and_watch()
    settings = kopf.OperatorSettings()
    settings.watching.reconnect_backoff = 0
    resource = references.Resource("llmops.io", "v1alpha1", "modeldeployments")

    async def collect() -> list[str]:
        stream = watching.infinite_watch(settings=settings, resource=resource, namespace=None, _iterations=2)
        return [e["object"]["metadata"]["name"] async for e in stream]

    with caplog.at_level("WARNING"):
        names = asyncio.run(collect())
    assert calls == ["modeldeployments", "modeldeployments"]
    assert names == ["page-1-of-listing-1", "page-1-of-listing-2", "page-2-of-listing-2"]
    assert caplog.text.count("refused as expired") == 1


def test_an_address_that_takes_the_connection_but_never_answers_fails_at_the_connect_bound() -> None:
    """A TLS handshake that never comes (a listener that accepts and stays silent) ends at the
    settings' connect_timeout, as aiohttp's sock_connect bound, in the timeout kopf builds from the
    settings for every request (kopf/_cogs/clients/api.py), not at the 60 s request timeout."""
    import ssl

    import aiohttp
    import pytest

    from llmops.operators.main import configure

    settings = kopf.OperatorSettings()
    configure(settings, None, default_kinds())
    settings.networking.connect_timeout = 0.5  # the bound under test, shortened for the test only

    async def attempt() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        timeout = aiohttp.ClientTimeout(
            total=settings.networking.request_timeout, sock_connect=settings.networking.connect_timeout
        )
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await session.get(f"https://127.0.0.1:{port}/api", ssl=ssl.create_default_context())
        finally:
            server.close()

    with pytest.raises(aiohttp.ConnectionTimeoutError, match="Connection timeout to host"):
        asyncio.run(attempt())


def test_the_connect_bound_is_set() -> None:
    from llmops.operators.main import configure

    settings = kopf.OperatorSettings()
    configure(settings, None, default_kinds())
    assert settings.networking.connect_timeout == 10 < settings.networking.request_timeout


def test_healthz_says_why_the_apiserver_did_not_answer() -> None:
    from llmops.operators import kube
    from llmops.operators.main import unreachable_reason

    assert unreachable_reason(kube.Unreachable(None, "Unreachable", "connection refused")) == (
        "Unreachable: connection refused"
    )
    assert unreachable_reason(TimeoutError()) == "TimeoutError"
    assert unreachable_reason(OSError("x" * 500 + "\nmore")) == ("OSError: " + "x" * 500)[:200]


def test_kopf_remembers_our_kinds_only() -> None:
    """kopf's per-object memories (main.memories) keep our own kinds' objects until their deletion and
    give a child's event a fresh memory that is not kept; kopf passes them to its processing of every
    event by this name and calls (guarded here, since they are kopf's internals)."""
    import inspect

    import kopf
    from kopf._core.reactor import processing

    from llmops.operators.main import memories

    assert "memories" in inspect.signature(kopf.operator).parameters
    assert "memories.recall(raw_body," in inspect.getsource(processing.process_resource_event)
    kept = memories()
    ours = {"apiVersion": "llmops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"uid": "u1"}}
    child = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"uid": "u2"}}
    memo = kopf.Memo(applier="a")

    async def recall_twice(body: dict) -> tuple:
        first = await kept.recall(body, memobase=memo, noticed_by_listing=True)
        return first, await kept.recall(body, memobase=memo)

    remembered, again = asyncio.run(recall_twice(ours))
    assert again is remembered and remembered.noticed_by_listing and remembered.memo.applier == "a"
    first, again = asyncio.run(recall_twice(child))
    assert again is not first and first.memo.applier == "a"
    assert list(kept.iter_all_memories()) == [remembered]


def test_tls_connections_read_into_the_small_buffer_and_carry_more_than_it(tmp_path) -> None:
    """After `configure`, a TLS connection of kopf's session (a real handshake with a local TLS
    server, self-signed CA) holds a TLS_READ_BUFFER read buffer, not asyncio's 256 KiB, and a body
    of 1 MiB, many buffers long, arrives whole. Reads asyncio's private attribute on purpose: the
    check that the Python in use still allocates its buffer from `SSLProtocol.max_size`."""
    import ssl

    from llmops.certs import common_name, issue_certificate, new_ca, pem, write_key
    from llmops.operators.main import TLS_READ_BUFFER, configure

    ca, ca_key = new_ca("test-ca")
    cert, key = issue_certificate(ca, ca_key, common_name("apiserver"), server_names=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(pem(cert))
    write_key(tmp_path / "tls.key", key)
    (tmp_path / "ca.crt").write_bytes(pem(ca))
    configure(kopf.OperatorSettings(), None, default_kinds())
    body = bytes(range(256)) * 4096  # 1 MiB

    buffers: set[int] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffers.add(len(writer.transport._ssl_protocol._ssl_buffer))  # the serving side's (webhook)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async def fetch() -> bytes:
        served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        served.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]
        info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{port}", ca_path=str(tmp_path / "ca.crt"))
        ctx = bounded_session(info, 4)
        try:
            async with ctx.aiohttp_session.get(f"https://127.0.0.1:{port}/") as response:
                buffers.add(len(response.connection.transport._ssl_protocol._ssl_buffer))
                return await response.read()
        finally:
            await ctx.aiohttp_session.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(fetch()) == body
    assert buffers == {TLS_READ_BUFFER}
