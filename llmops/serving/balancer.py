"""Choosing a replica, and the bounded queue in front of them.

`Balancer` (pure, synchronous):
- between versions, smooth weighted round-robin (the nginx algorithm): over any run of requests each
  version's share follows its weight exactly, interleaved rather than in bursts; a version with no
  ready replica with a free slot is skipped, and its share goes to the others until it is back;
- inside a version, least outstanding requests among the ready replicas, ties broken round-robin.
  A replica takes at most `max_outstanding` requests at once (vLLM batches them itself).

`Dispatcher` (asyncio): admission in FIFO order. A request that finds a free slot and nobody waiting
goes straight through; otherwise it waits in a queue of at most `max_queue` (full: `QueueFull`, 429).
It waits `queue_timeout` when replicas are up but busy, and `hold_timeout` when none is ready at all
(scale to zero: the autoscaler sees the pending count and starts one); past that, `QueueTimeout` (503).
With no ready replica and no hold, `NoReplicas` (503) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from yarl import URL

UNHEALTHY_AFTER = 3


@dataclass(eq=False)
class Replica:
    url: str
    version: str
    ready: bool = False
    outstanding: int = 0
    failures: int = 0  # failed health checks in a row
    _endpoints: dict[str, URL] = field(default_factory=dict, repr=False)

    def observe_health(self, ok: bool, *, refused: bool = False) -> bool:
        """Record one health check; True when readiness changed. A replica that refuses connections is
        out at once; one that answers late or badly only after UNHEALTHY_AFTER checks in a row, so a
        server slow to answer /health because it is busy serving is not ejected for being busy."""
        before = self.ready
        self.failures = 0 if ok else self.failures + 1
        if ok:
            self.ready = True
        elif refused or self.failures >= UNHEALTHY_AFTER:
            self.ready = False
        return self.ready != before

    def endpoint(self, path: str) -> URL:
        """`url` + `path`, parsed once: URL parsing is a measurable part of a proxied request."""
        if (url := self._endpoints.get(path)) is None:
            url = self._endpoints[path] = URL(self.url + path)
        return url


@dataclass(eq=False)
class Group:
    version: str
    role: str
    weight: int
    replicas: dict[str, Replica] = field(default_factory=dict)
    current: int = 0  # smooth weighted round-robin state
    rotation: itertools.count = field(default_factory=itertools.count)

    def ready(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.ready]


class Balancer:
    def __init__(self, groups: Iterable[tuple[str, str, int]], max_outstanding: int) -> None:
        self.groups = {version: Group(version, role, weight) for version, role, weight in groups}
        self.max_outstanding = max_outstanding

    def set_replicas(self, version: str, urls: Iterable[str]) -> bool:
        """Make `urls` the version's replicas (new ones start not ready). True if anything changed."""
        group = self.groups[version]
        urls = list(dict.fromkeys(urls))
        if list(group.replicas) == urls:
            return False
        group.replicas = {u: group.replicas.get(u) or Replica(u, version) for u in urls}
        return True

    def set_weight(self, version: str, weight: int) -> None:
        self.groups[version].weight = weight

    def replicas(self) -> list[Replica]:
        return [r for g in self.groups.values() for r in g.replicas.values()]

    def any_ready(self) -> bool:
        return any(r.ready for g in self.groups.values() if g.weight > 0 for r in g.replicas.values())

    def _free(self, group: Group) -> Replica | None:
        """The ready replica with the fewest outstanding requests below `max_outstanding`, ties taken
        round-robin (one pass: this runs for every request)."""
        low = self.max_outstanding
        ties: list[Replica] = []
        for r in group.replicas.values():
            if r.ready and r.outstanding <= low:
                if r.outstanding < low:
                    low = r.outstanding
                    ties = [r]
                elif ties:
                    ties.append(r)
        if not ties:
            return None
        return ties[next(group.rotation) % len(ties)]

    def pick(self) -> Replica | None:
        """The replica for the next request, or None if every ready replica is full (or none is ready)."""
        candidates = []
        for group in self.groups.values():
            if group.weight > 0:
                replica = self._free(group)
                if replica is not None:
                    candidates.append((group, replica))
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0][1]
        total = 0
        for group, _ in candidates:
            group.current += group.weight
            total += group.weight
        best_group, best = max(candidates, key=lambda c: c[0].current)
        best_group.current -= total
        return best


class QueueFull(Exception):
    """The queue holds `max_queue` requests already."""


class QueueTimeout(Exception):
    """Waited the whole timeout without a free replica."""


class NoReplicas(Exception):
    """No replica is ready and holding requests is off."""


class Draining(Exception):
    """The gateway is shutting down."""


class Suspended(Exception):
    """The ModelDeployment is suspended (the config's `suspension`): requests still waiting in the queue
    are answered so at once; none reached a model."""


class Dispatcher:
    def __init__(
        self,
        balancer: Balancer,
        *,
        max_queue: int,
        queue_timeout: float,
        hold_timeout: float,
        on_pending: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.balancer = balancer
        self.max_queue, self.queue_timeout, self.hold_timeout = max_queue, queue_timeout, hold_timeout
        self.on_pending = on_pending  # told the queue's length when it changes
        self._reported = 0
        self.pending: deque[asyncio.Future[Replica]] = deque()
        self.draining = False

    def _take(self) -> Replica | None:
        replica = self.balancer.pick()
        if replica is not None:
            replica.outstanding += 1
        return replica

    async def acquire(self) -> Replica:
        if self.draining:
            raise Draining()
        if not self.pending:
            replica = self._take()
            if replica is not None:
                return replica
        ready = self.balancer.any_ready()
        if not ready and self.hold_timeout <= 0:
            raise NoReplicas()
        if len(self.pending) >= self.max_queue:
            raise QueueFull()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Replica] = loop.create_future()
        timeout = self.queue_timeout if ready else self.hold_timeout
        timer = loop.call_later(timeout, lambda: fut.done() or fut.set_exception(QueueTimeout()))
        self.pending.append(fut)
        self._report()
        try:
            return await fut
        except asyncio.CancelledError:
            # The client went away; if a replica was handed over meanwhile, give it back.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self.pending.remove(fut)
            self._report()

    def _report(self) -> None:
        """Tell `on_pending` the queue's length if it changed (a release with nobody waiting, the
        common case, calls nothing)."""
        if (n := len(self.pending)) != self._reported:
            self._reported = n
            self.on_pending(n)

    def release(self, replica: Replica) -> None:
        replica.outstanding -= 1
        self.wake()

    def wake(self) -> None:
        """Hand free replicas to waiting requests, oldest first (after a release or a replica change)."""
        while self.pending:
            fut = self.pending[0]
            if fut.done():
                self.pending.popleft()
                continue
            replica = self._take()
            if replica is None:
                break
            self.pending.popleft()
            fut.set_result(replica)
        self._report()

    def fail_all(self, exc: Exception) -> None:
        for fut in self.pending:
            if not fut.done():
                fut.set_exception(exc)
