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


def _steal_ticks() -> int:
    """Ticks the hypervisor took from this machine since boot (/proc/stat's eighth column; proc(5))."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8])


def test_the_machine_counts_at_least_what_this_process_used(procfs) -> None:
    """The machine's busy CPU (user, nice, system, irq, softirq of /proc/stat) includes this process's
    own user and system time: it grows by at least what the process used, less a clock tick each side
    (both are sampled at ticks). Counted in whole ticks, so no float rounding decides it; ticks the
    hypervisor stole while the process ran count to the process but to `steal` on the machine, so
    they are allowed for."""
    hz = os.sysconf("SC_CLK_TCK")
    before, steal = procfs.machine_cpu_seconds(), _steal_ticks()
    used = _spin(procfs, 0.3)
    grown = round((procfs.machine_cpu_seconds() - before) * hz)
    assert grown + (_steal_ticks() - steal) >= round(used * hz) - 2


def test_a_process_gone_reads_as_nan(procfs) -> None:
    """A pid with no process (above the kernel's pid_max) reads as NaN, not an error."""
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    assert math.isnan(procfs.cpu_seconds(gone))
