"""bench/procfs.py read against this machine's own /proc: the counters the bench prints."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def procfs(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import procfs

    return procfs


def _spin(procfs, cpu: float) -> float:
    """Use at least `cpu` seconds of this process's CPU; return what it used (`cpu_seconds`)."""
    start = procfs.cpu_seconds(os.getpid())
    while (used := procfs.cpu_seconds(os.getpid()) - start) < cpu:
        sum(i * i for i in range(10_000))
    return used


def test_the_machine_counts_at_least_what_this_process_used(procfs) -> None:
    """The machine's busy CPU (user, nice, system, irq, softirq of /proc/stat) includes this process's
    own user and system time: it grows by at least what the process used, less a clock tick each side."""
    tick = 1 / os.sysconf("SC_CLK_TCK")
    before = procfs.machine_cpu_seconds()
    used = _spin(procfs, 0.3)
    assert procfs.machine_cpu_seconds() - before >= used - 2 * tick


def test_a_process_gone_reads_as_nan(procfs) -> None:
    """A pid with no process (above the kernel's pid_max) reads as NaN, not an error."""
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    assert math.isnan(procfs.cpu_seconds(gone))
