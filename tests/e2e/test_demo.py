"""The README's main command, end to end: `make demo` from a clean state, as a newcomer runs it.

It runs hack/demo.sh in a fresh state folder (its own control plane, operator, MinIO, Ray head and
Prometheus), then checks what the demo promises, from the cluster and from what it printed:
a model version registered with every gate passing, the ModelDeployment Ready, an answer through
the official `openai` client, and a figure for every metric it prints (vLLM's included). The
tools and the Python environment come from the keyed caches that `make test` has just filled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.dev.tools import binary

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.timeout(2400)


def _section(out: str, title: str) -> list[str]:
    """The lines the demo printed under its step `title` (up to the next step)."""
    lines = out.split("\n")
    start = next(i for i, line in enumerate(lines) if re.search(rf"== {re.escape(title)}\b", line))
    end = next((i for i in range(start + 1, len(lines)) if "== " in lines[i]), len(lines))
    return [line for line in lines[start + 1 : end] if line.strip() and not line.strip().startswith("(")]


def test_make_demo_from_a_clean_state(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    env = {**os.environ, "LLMOPS_DEV_DIR": str(state)}
    kubectl = [binary("kubectl"), "--kubeconfig", str(state / "kubeconfig"), "-n", "quickstart"]

    def get(kind: str) -> dict:
        args = [*kubectl, "get", kind, "quickstart", "-o", "json"]
        return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)

    try:
        run = subprocess.run(["make", "demo"], cwd=ROOT, env=env, capture_output=True, text=True)
        out = run.stdout
        assert run.returncode == 0, f"make demo failed:\n{out[-6000:]}\n{run.stderr[-4000:]}"

        tj = get("tj")
        status = tj["status"]
        assert status["phase"] == "Succeeded"
        assert status["gates"], "the quickstart TrainingJob declares gates"
        assert all(g["passed"] for g in status["gates"]), status["gates"]
        version = status["modelVersion"]
        assert version["name"] == "support-tiny" and version["version"]

        md = get("md")
        ready = {c["type"]: c for c in md["status"]["conditions"]}["Ready"]
        assert ready["status"] == "True"
        assert ready["observedGeneration"] == md["metadata"]["generation"]
        assert md["status"]["observedGeneration"] == md["metadata"]["generation"]

        chat = _section(out, "chat")
        assert any(line.startswith("model support-tiny answered:") for line in chat), chat
        tokens = next(line for line in chat if line.startswith("tokens:"))
        assert int(re.search(r"completion (\d+)", tokens).group(1)) > 0

        metrics = _section(out, "metrics")
        assert len(metrics) >= 6, metrics
        empty = [line for line in metrics if "no data" in line or not re.search(r"\d", line.split("  ")[-1])]
        assert not empty, f"metrics without a figure: {empty}"
        assert any(line.strip().startswith("vLLM") for line in metrics)
    finally:
        # Whatever happened, no process of the demo outlives the test.
        down = [sys.executable, "-m", "llmops.cli", "dev", "down", "--state-dir", str(state)]
        subprocess.run(down, env=env, capture_output=True, check=False)
