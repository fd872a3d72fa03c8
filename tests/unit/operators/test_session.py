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
