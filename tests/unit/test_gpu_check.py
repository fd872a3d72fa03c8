"""hack/gpu_check.py needs a GPU; its pure part, what it runs, is checked here so it cannot rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from llmops.engine import MODEL_ROOT, localize_argv

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "hack" / "gpu_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", ["single", "lora-adapters"])
def test_it_runs_the_deployed_vllm_command_with_only_paths_and_ports_changed(gpu_check, case, tmp_path):
    spec, container, _ = gpu_check.deployed_container(case)
    deployed = container["command"]
    assert deployed[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    run = localize_argv(deployed, tmp_path, {"--port": "1234", "--host": "127.0.0.1"})
    changed = [(a, b) for a, b in zip(deployed, run, strict=True) if a != b]
    assert all(a in ("python", "8000", "0.0.0.0") or MODEL_ROOT in a for a, _ in changed), changed
    if spec.engine.lora_adapters:
        assert "--enable-lora" in run and f"billing={tmp_path}/adapters/billing" in run


def test_the_training_smoke_runs_its_steps_on_the_cpu(tmp_path):
    """hack/gpu_train_smoke.py with gloo on the CPU: the same model, batches, loss and bf16 autocast."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gpu_train_smoke.py"), "--device", "cpu", "--steps", "12",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "train_smoke.json").read_text())
    assert report["method"] == "lora" and report["backend"] == "gloo" and report["ok"]
