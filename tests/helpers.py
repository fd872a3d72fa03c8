"""Small helpers shared by the test suites."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60, interval: float = 0.5) -> T:
    """Poll until `check()` returns something truthy and return it.

    A readiness wait for asynchronous controllers, not a timing assertion: the timeout is generous.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
