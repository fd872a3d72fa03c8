"""The allocator trim task (operators.trim): glibc's malloc_trim, called while the operator runs."""

from __future__ import annotations

import asyncio

from llmops.operators.trim import Trimmer, malloc_trim


def test_malloc_trim_is_found_on_glibc_and_answers() -> None:
    trim = malloc_trim()
    assert trim is not None  # this machine's C library is glibc
    garbage = [bytearray(4096) for _ in range(10_000)]
    del garbage
    assert trim() in (0, 1)


def test_the_task_trims_every_period_and_stops() -> None:
    calls = []

    async def run() -> None:
        trimmer = Trimmer(period=0.01)
        trimmer._trim = lambda: calls.append(1) or 1
        trimmer.start()
        await asyncio.sleep(0.2)
        await trimmer.stop()
        count = len(calls)
        await asyncio.sleep(0.05)
        assert len(calls) == count  # stopped: no more calls

    asyncio.run(run())
    assert len(calls) >= 2


def test_without_glibc_nothing_runs() -> None:
    async def run() -> None:
        trimmer = Trimmer(period=0.01)
        trimmer._trim = None
        trimmer.start()
        assert trimmer._task is None
        await trimmer.stop()

    asyncio.run(run())
