"""What `make demo`, `make test` and `llmops dev up` need, checked before anything starts.

Standard library only: `make demo` runs it with the system's `python3` before the virtual
environment exists (`python3 -m llmops.dev.preflight demo`). Each problem is one line that says
what is missing and how to get it; the exit status is 1 when any is found.

    python3 -m llmops.dev.preflight demo|test|cluster
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops"))
MIN_PYTHON = (3, 11)
MIN_GO = (1, 26, 7)  # hack/tools/prometheus/go.mod's `go` line
# Disk a cold setup writes, measured on a fresh machine (GiB, rounded up): the shared venv with its
# pip downloads (torch, vLLM for the CPU, Ray), and the Go module and build caches of the tools.
VENV_GIB = 14
# `make test` also builds llm-compressor's venv (hack/venv.sh optimize: torch, Ray, llm-compressor):
# 5.8 GiB measured, plus its downloads.
OPTIMIZE_VENV_GIB = 8
TOOLS_GIB = 10
STATE_GIB = 2  # one dev cluster: etcd, MinIO data, Prometheus TSDB, the demo's model copies
# The demo runs vLLM on the CPU beside a Ray worker and the control plane.
DEMO_MEMORY_GIB = 8


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str

    def __str__(self) -> str:
        return f"missing: {self.what}; {self.fix}"


def _version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def go_version() -> tuple[int, int, int] | None:
    """(major, minor, patch) of the `go` on PATH, or None when there is none."""
    go = shutil.which("go")
    if not go:
        return None
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False)
    return _version(out.stdout)


def _lines(argv: list[str]) -> list[str]:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return [line for line in out.stdout.split("\n") if line] if out.returncode == 0 else []


def tools_to_build() -> list[str]:
    """Tools whose keyed cache entry is missing (`hack/tools/build.sh --missing`)."""
    if go_version() is None:  # no key can be computed; count what is not linked yet
        bin_dir = Path(os.environ.get("LLMOPS_TOOLS_BIN", CACHE_DIR / "bin"))
        wanted = ["kube-apiserver", "etcd", "kwok", "helm", "minio", "prometheus"]
        return [b for b in wanted if not (bin_dir / b).exists()]
    return _lines([str(REPO_ROOT / "hack" / "tools" / "build.sh"), "--missing"])


def venv_missing(extras: str = "dev") -> bool:
    """True when the shared Python environment for this checkout's dependencies (with `extras`) is
    not built."""
    shared = _lines([str(REPO_ROOT / "hack" / "venv.sh"), "--print-shared", extras])
    return not shared or not (Path(shared[0]) / ".complete").exists()


def free_gib(path: Path) -> float:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / 2**30


def loopback_ok() -> bool:
    """The control plane listens on free loopback ports: binding one must work."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
        return True
    except OSError:
        return False


def memory_gib() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return float("inf")
    m = re.search(r"MemTotal:\s+(\d+) kB", text)
    return int(m.group(1)) / 2**20 if m else float("inf")


def check(purpose: str, state_dir: Path | None = None) -> list[Problem]:
    """Problems that would stop `purpose` ("demo", "test" or "cluster") part-way; empty when none."""
    problems: list[Problem] = []
    if sys.version_info[:2] < MIN_PYTHON:
        want = ".".join(map(str, MIN_PYTHON))
        problems.append(
            Problem(f"Python >= {want} (this is {sys.version.split()[0]})", "install a newer python3")
        )
    building = tools_to_build()
    go = go_version()
    if building and (go is None or go < MIN_GO):
        have = "no go on PATH" if go is None else "go" + ".".join(map(str, go))
        problems.append(
            Problem(
                f"Go >= {'.'.join(map(str, MIN_GO))} to build {', '.join(building)} ({have})",
                "install Go from https://go.dev/dl (or your package manager) and put it on PATH",
            )
        )
    if purpose != "cluster":
        for tool, package in (("make", "make"), ("flock", "util-linux"), ("sha256sum", "coreutils")):
            if not shutil.which(tool):
                problems.append(Problem(f"`{tool}`", f"install the package {package}"))
    need = STATE_GIB + (TOOLS_GIB if building else 0)
    if purpose != "cluster" and venv_missing():
        need += VENV_GIB
    if purpose == "test" and venv_missing("optimize"):
        need += OPTIMIZE_VENV_GIB
    have = free_gib(CACHE_DIR)
    if have < need:
        problems.append(
            Problem(
                f"{need} GiB of free disk under {CACHE_DIR} ({have:.1f} GiB free)",
                "free some space, or point LLMOPS_CACHE at a larger disk",
            )
        )
    if state_dir is not None and free_gib(state_dir) < STATE_GIB:
        problems.append(
            Problem(
                f"{STATE_GIB} GiB free for the cluster's state in {state_dir}",
                "free some space, or set LLMOPS_DEV_DIR to a folder on a larger disk",
            )
        )
    if not loopback_ok():
        problems.append(Problem("a loopback port to listen on (127.0.0.1)", "check the loopback interface"))
    if purpose == "demo" and memory_gib() < DEMO_MEMORY_GIB:
        problems.append(
            Problem(
                f"{DEMO_MEMORY_GIB} GiB of memory for vLLM, Ray and the control plane "
                f"({memory_gib():.1f} GiB)",
                "run the demo on a larger machine",
            )
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    purpose = args[0] if args else "demo"
    if purpose not in ("demo", "test", "cluster"):
        print(f"usage: python3 -m llmops.dev.preflight demo|test|cluster (got {purpose!r})", file=sys.stderr)
        return 2
    state = os.environ.get("LLMOPS_DEV_DIR")
    problems = check(purpose, Path(state) if state else None)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        building = tools_to_build()
        todo = f"; first run: will build {', '.join(building)} from the Go module proxy" if building else ""
        print(f"preflight ({purpose}): nothing missing{todo}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
