"""Choosing a replica and the bounded queue in front of them (serving.balancer)."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmops.serving.balancer import (
    UNHEALTHY_AFTER,
    Balancer,
    Dispatcher,
    NoReplicas,
    QueueFull,
    QueueTimeout,
    Replica,
)


def _balancer(weights: dict[str, int], replicas: int = 1, max_outstanding: int = 1000) -> Balancer:
    b = Balancer([(v, "stable", w) for v, w in weights.items()], max_outstanding)
    for v in weights:
        b.set_replicas(v, [f"http://{v}-{i}" for i in range(replicas)])
        for r in b.groups[v].replicas.values():
            r.ready = True
    return b


def test_weighted_split_is_exact_and_interleaved():
    b = _balancer({"stable": 80, "canary": 20})
    picks = [b.pick().version for _ in range(100)]
    assert picks.count("stable") == 80 and picks.count("canary") == 20
    # Smooth: canary requests are spread out, never two in a row at 20%.
    assert all(not (a == c == "canary") for a, c in itertools.pairwise(picks))


def test_weight_zero_and_unready_groups_get_nothing():
    b = _balancer({"stable": 100, "canary": 0})
    assert {b.pick().version for _ in range(50)} == {"stable"}
    b = _balancer({"stable": 50, "canary": 50})
    for r in b.groups["canary"].replicas.values():
        r.ready = False
    assert {b.pick().version for _ in range(50)} == {"stable"}  # its share moves to the others


def test_a_busy_replica_is_not_ejected_for_one_slow_health_check():
    r = Replica("http://a:1", "1")
    assert r.observe_health(True) and r.ready  # the first good check admits it
    for _ in range(UNHEALTHY_AFTER - 1):  # timeouts or 5xx: a busy server, maybe
        assert not r.observe_health(False) and r.ready
    assert r.observe_health(False) and not r.ready  # failing in a row: out
    assert r.observe_health(True) and r.ready and r.failures == 0  # one good check: back
    assert r.observe_health(False, refused=True) and not r.ready  # nothing listens: out at once


def test_least_outstanding_with_round_robin_ties():
    b = _balancer({"v": 100}, replicas=3)
    first = [b.pick() for _ in range(3)]
    assert len({r.url for r in first}) == 3  # ties rotate
    r0, r1, r2 = b.groups["v"].replicas.values()
    r0.outstanding, r1.outstanding, r2.outstanding = 5, 1, 3
    assert b.pick() is r1
    r1.outstanding = 9
    assert b.pick() is r2


def test_max_outstanding_per_replica():
    b = _balancer({"v": 100}, replicas=2, max_outstanding=2)
    taken = []
    for _ in range(4):
        r = b.pick()
        r.outstanding += 1
        taken.append(r)
    assert b.pick() is None
    taken[0].outstanding -= 1
    assert b.pick() is taken[0]


def test_set_replicas_keeps_state_of_known_replicas():
    b = _balancer({"v": 100}, replicas=2)
    keep = b.groups["v"].replicas["http://v-0"]
    keep.outstanding = 3
    assert b.set_replicas("v", ["http://v-0", "http://new"])
    assert b.groups["v"].replicas["http://v-0"] is keep
    assert not b.groups["v"].replicas["http://new"].ready
    assert not b.set_replicas("v", ["http://v-0", "http://new"])


def test_queue_is_bounded_fifo_and_times_out():
    async def scenario():
        b = _balancer({"v": 100}, replicas=1, max_outstanding=1)
        pending = []
        d = Dispatcher(b, max_queue=2, queue_timeout=0.2, hold_timeout=0, on_pending=pending.append)
        first = await d.acquire()
        waiters = [asyncio.create_task(d.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        assert len(d.pending) == 2 and pending[-1] == 2
        with pytest.raises(QueueFull):
            await d.acquire()
        d.release(first)  # the oldest waiter gets the slot
        got = await waiters[0]
        assert got is first and not waiters[1].done()
        with pytest.raises(QueueTimeout):
            await waiters[1]
        assert len(d.pending) == 0 and pending[-1] == 0

    asyncio.run(scenario())


def test_hold_while_scaled_to_zero_then_serve():
    async def scenario():
        b = Balancer([("v", "stable", 100)], 10)
        d = Dispatcher(b, max_queue=10, queue_timeout=0.05, hold_timeout=5)
        held = asyncio.create_task(d.acquire())
        await asyncio.sleep(0.1)  # longer than the queue timeout: the hold applies, not the queue's
        assert not held.done() and len(d.pending) == 1
        b.set_replicas("v", ["http://pod"])
        b.groups["v"].replicas["http://pod"].ready = True
        d.wake()
        replica = await asyncio.wait_for(held, 1)
        assert replica.url == "http://pod" and replica.outstanding == 1

    asyncio.run(scenario())


def test_no_replicas_and_no_hold_fails_fast():
    async def scenario():
        d = Dispatcher(Balancer([("v", "stable", 100)], 10), max_queue=10, queue_timeout=5, hold_timeout=0)
        with pytest.raises(NoReplicas):
            await d.acquire()

    asyncio.run(scenario())


def test_cancelled_waiter_leaves_the_queue_and_returns_its_slot():
    async def scenario():
        b = _balancer({"v": 100}, max_outstanding=1)
        d = Dispatcher(b, max_queue=5, queue_timeout=5, hold_timeout=0)
        first = await d.acquire()
        waiter = asyncio.create_task(d.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not d.pending
        d.release(first)
        assert first.outstanding == 0
        assert (await d.acquire()) is first

    asyncio.run(scenario())


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 4)), max_size=6),
    st.integers(1, 4),
    st.integers(0, 10),
)
def test_least_outstanding_choice_follows_its_definition(pool, max_outstanding, turn):
    """The ready replica with the fewest outstanding requests under the limit, ties round-robin:
    the definition written out (filter, minimum, ties) chooses the same replica."""
    b = Balancer([("v", "stable", 100)], max_outstanding)
    b.set_replicas("v", [f"http://v-{i}" for i in range(len(pool))])
    group = b.groups["v"]
    for replica, (ready, outstanding) in zip(group.replicas.values(), pool, strict=True):
        replica.ready, replica.outstanding = ready, outstanding
    free = [r for r in group.replicas.values() if r.ready and r.outstanding < max_outstanding]
    ties = [r for r in free if r.outstanding == min((r.outstanding for r in free), default=0)]
    group.rotation = itertools.count(turn)
    chosen = b.pick()
    print("pool", pool, "limit", max_outstanding, "chosen", chosen.url if chosen else None)
    assert chosen is (ties[turn % len(ties)] if ties else None)


def test_pending_is_reported_when_the_queue_length_changes_only():
    async def scenario():
        b = _balancer({"v": 100}, replicas=1, max_outstanding=1)
        reported = []
        d = Dispatcher(b, max_queue=4, queue_timeout=5, hold_timeout=0, on_pending=reported.append)
        for _ in range(3):  # a slot taken and given back with nobody waiting: the gauge stays 0, untouched
            d.release(await d.acquire())
        assert reported == []
        first = await d.acquire()
        waiter = asyncio.create_task(d.acquire())
        await asyncio.sleep(0)
        d.release(first)
        d.release(await waiter)
        print("reported", reported)
        assert reported == [1, 0]

    asyncio.run(scenario())
