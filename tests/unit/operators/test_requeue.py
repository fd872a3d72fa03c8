"""The requeue while the apiserver is away: every due object's poke fails, and the log says so at a
bounded rate (ReconnectLog on the requeue's logger), not once per object and try.

The apiserver's absence is stood in for by a client whose merge patch raises `kube.Unreachable`, as
llmops/operators/kube.py does when no answer comes; tests/reliability/test_control_plane_restart.py
takes a real apiserver away.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

from llmops.api import MODEL_DEPLOYMENT
from llmops.operators import kube, runtime
from llmops.operators.main import ReconnectLog
from llmops.operators.runtime import REQUEUE_FAILED, REQUEUE_LOG, Requeue


class Away:
    """A client with no apiserver behind it: every merge patch is unreachable."""

    def __init__(self) -> None:
        self.pokes: list[str] = []

    def merge_patch(self, api_version: str, kind: str, name: str, namespace: str, body: dict) -> dict:
        self.pokes.append(name)
        raise kube.Unreachable(None, "Unreachable", "connection refused")


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_failed_pokes_while_the_apiserver_is_away_are_logged_at_a_bounded_rate() -> None:
    now = [0.0]
    policy = ReconnectLog(REQUEUE_FAILED, clock=lambda: now[0])
    kept = Kept()
    kept.addFilter(policy)
    REQUEUE_LOG.addHandler(kept)
    client = Away()
    requeue = Requeue(MODEL_DEPLOYMENT)

    async def run() -> None:
        requeue.start(SimpleNamespace(kube=client), logging.getLogger("test.requeue"))
        for i in range(200):
            requeue.later("ns", f"md-{i}", 0)
        # Each failure is logged, then the object asked for again (in that order, after the poke's
        # thread has returned): wait for the last of these, not for the pokes alone.
        while len(client.pokes) < 200 or requeue.pending() < 200:
            await asyncio.sleep(0.01)
        now[0] = ReconnectLog.INTERVAL + 1  # the next outage record may be kept
        requeue.later("ns", "md-late", 0)
        while len(client.pokes) < 201 or requeue.pending() < 201:
            await asyncio.sleep(0.01)
        await requeue.stop()

    try:
        asyncio.run(run())
    finally:
        REQUEUE_LOG.removeHandler(kept)

    messages = [r.getMessage() for r in kept.records]
    print(f"201 failed pokes, {len(messages)} records kept: {messages}")
    assert len(client.pokes) == 201
    assert len(messages) == 2, messages
    assert all(r.levelno == logging.WARNING for r in kept.records)
    assert messages[0].startswith("could not request a reconcile of ns/md-")
    assert "connection refused" in messages[0]
    assert "199 more failed attempts not shown" in messages[1]
    # Each failed object is asked for again, not dropped.
    assert requeue.pending() == 201


def test_kopf_request_attempts_are_rate_limited_whichever_logger_asked():
    """kopf logs a failed attempt on the logger of whoever asked: its watches' module logger, each
    object's `kopf.objects` (a status patch during an outage: CI saw 16 such lines at error level), its
    Event poster's. `ReconnectLog.install` filters at the handler, which all of them reach."""
    kept = Kept()
    root = logging.getLogger()
    root.addHandler(kept)
    ReconnectLog.install([kept])
    try:
        for i in range(1, 9):
            for name in ("kopf.objects", "kopf._cogs.clients.watching", "kopf._core.engines.posting"):
                logging.getLogger(name).error(
                    f"Request attempt #{i}/9 failed; will retry: PATCH https://127.0.0.1/apis/x -> refused"
                )
        logging.getLogger("kopf.objects").error("Handler 'x' failed with an exception.")
    finally:
        root.removeHandler(kept)
    attempts = [r for r in kept.records if r.getMessage().startswith("Request attempt")]
    print(f"24 failed attempts on 3 loggers: {len(attempts)} kept, at {[r.levelname for r in attempts]}")
    assert len(attempts) == 1 and attempts[0].levelno == logging.WARNING
    # Any other record passes untouched.
    assert [r.levelno for r in kept.records if r.getMessage().startswith("Handler")] == [logging.ERROR]


class Here:
    """A client whose pokes succeed; it only counts them."""

    def __init__(self) -> None:
        self.pokes: list[str] = []

    def merge_patch(self, api_version: str, kind: str, name: str, namespace: str, body: dict) -> dict:
        self.pokes.append(name)
        return {}


def test_an_object_poked_and_not_yet_reconciled_is_not_poked_again() -> None:
    """A request that falls due while the last poke still waits for its reconcile costs no PATCH; once
    the reconcile has begun (`started`), the next request pokes again. A failed poke waits for nothing."""
    client = Here()
    requeue = Requeue(MODEL_DEPLOYMENT)

    async def settle(pokes: int) -> None:
        while requeue.pending() or len(client.pokes) < pokes:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # a further poke, if any, would have been made by now

    async def run() -> None:
        requeue.start(SimpleNamespace(kube=client), logging.getLogger("test.requeue"))
        requeue.later("ns", "md", 0)
        await settle(1)
        requeue.later("ns", "md", 0)  # the first poke's reconcile has not started: nothing sent
        await settle(1)
        requeue.started("ns", "md")
        requeue.later("ns", "md", 0)
        await settle(2)
        requeue.later("ns", "other", 0)
        await settle(3)
        await requeue.stop()

    asyncio.run(run())
    assert client.pokes == ["md", "md", "other"]

    away = Away()
    requeue = Requeue(MODEL_DEPLOYMENT)

    async def failing() -> None:
        requeue.start(SimpleNamespace(kube=away), logging.getLogger("test.requeue"))
        requeue.later("ns", "md", 0)
        while not away.pokes or not requeue.pending():  # failed, and asked for again in 10 s
            await asyncio.sleep(0.01)
        await requeue.stop()

    asyncio.run(failing())
    assert not requeue._awaited(("ns", "md"))  # the failed poke left no mark
    assert requeue._poked  # ... but that look did leave one
    requeue._swept -= runtime.POKE_PENDING_SECONDS + 1
    requeue._poked[("ns", "md")] -= runtime.POKE_PENDING_SECONDS + 1  # an object deleted after its poke
    requeue._take_due()
    assert not requeue._poked  # swept: poked objects that never got a reconcile are not kept forever
