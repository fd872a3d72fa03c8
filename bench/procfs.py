"""What a running process has used, read from Linux's /proc, for the bench scripts beside this one.

- `cpu_seconds(pid)`: user + system CPU time so far, all threads (`/proc/PID/stat` fields 14 and 15,
  utime and stime, in clock ticks; proc(5)), in seconds; NaN once the process is gone.
- `machine_cpu_seconds()`: the CPU time the whole machine has been busy since boot, in seconds:
  `/proc/stat`'s first line, user, nice, system, irq and softirq (not idle, iowait, steal, nor guest,
  which user already counts; proc(5)).
- `rss_mib(pid)`: `(current, peak)` resident set size (`VmRSS`, `VmHWM` of `/proc/PID/status`), MiB;
  NaN where the kernel does not report one.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far, all its threads, seconds (NaN: gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Seconds of CPU time the machine has been busy since boot, all cores (see the module's docstring)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of process `pid`, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))
