"""Hand the C allocator's free memory back to the operating system, once a minute (glibc only).

CPython returns freed objects to the C allocator, which keeps their pages: after a burst of watch
events (the operator starting with 1,000 objects, each with a dozen children) the process stays at the
burst's resident size although its Python heap is back near idle (`bench/reconcile_scale.py
--tracemalloc`). glibc's `malloc_trim(0)` (malloc_trim(3); since glibc 2.8 it releases free pages
inside its heaps, not only at their top) gives them back. Dask's workers do the same for the same
reason (distributed's memory docs, "Manually trim memory"). Where the C library is not glibc (musl,
macOS) there is no such call and nothing is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
from collections.abc import Callable

PERIOD_SECONDS = 60.0

log = logging.getLogger(__name__)


def malloc_trim() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)` as a function returning 1 when memory was released, else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class Trimmer:
    """A task that calls malloc_trim every `period` seconds while the operator runs."""

    def __init__(self, period: float = PERIOD_SECONDS) -> None:
        self.period = period
        self._trim = malloc_trim()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._trim is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="malloc-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._trim is not None
        while True:
            await asyncio.sleep(self.period)
            # Milliseconds for the operator's heaps (it walks them under the allocator's locks).
            released = self._trim()
            log.debug("malloc_trim: %s", "released memory" if released else "nothing to release")
