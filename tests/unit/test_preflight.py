"""`make demo` and `llmops dev up` say what is missing before they start anything.

Run as a newcomer would meet it: the real commands, with a PATH that has no Go and an empty
tools cache, so the tools would have to be built and cannot be.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _env_without_go(tmp_path: Path) -> dict[str, str]:
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "go").exists()]
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), *path]),
        "LLMOPS_TOOLS_BIN": str(tmp_path / "bin"),
        "LLMOPS_DEV_DIR": str(tmp_path / "dev"),
    }


def test_preflight_names_go_and_the_tools_it_would_build(tmp_path: Path) -> None:
    env = _env_without_go(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "llmops.dev.preflight", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().split("\n")
    go = [line for line in lines if "Go >= 1.26" in line]
    assert len(go) == 1, lines
    assert "kube-apiserver" in go[0] and "prometheus" in go[0] and "https://go.dev/dl" in go[0]
    assert all(line.startswith("missing: ") for line in lines), lines


def test_dev_up_starts_nothing_when_something_is_missing(tmp_path: Path) -> None:
    env = _env_without_go(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "llmops.cli", "dev", "up"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 1
    assert "missing: Go >= 1.26" in run.stderr
    assert "nothing was started" in run.stderr
    assert not (tmp_path / "dev" / "state.json").exists()


def test_preflight_passes_here() -> None:
    """On this machine (Go present, tools built by `make test`) nothing is missing."""
    run = subprocess.run(
        [sys.executable, "-m", "llmops.dev.preflight", "test"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
