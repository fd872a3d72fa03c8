"""The compress stage's recipe builder (spec.method.quantization -> llm-compressor's recipe YAML) and
what register.py records of a quantized version. Pure: no llm-compressor here (the dev venv cannot
hold it); tests/workloads/test_quantize_workload.py runs these recipes through llm-compressor on Ray.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from llmops import registry
from llmops.api.trainingjob import Quantization
from llmops.training import compress
from llmops.training.errors import UserError


def modifiers(q: Quantization) -> dict:
    recipe = yaml.safe_load(compress.recipe(q))
    assert list(recipe) == ["quant_stage"] and list(recipe["quant_stage"]) == ["quant_modifiers"]
    return recipe["quant_stage"]["quant_modifiers"]


@pytest.mark.parametrize(
    ("scheme", "algorithm", "modifier"),
    [
        ("W8A8", "RTN", "QuantizationModifier"),
        ("W4A16", "RTN", "QuantizationModifier"),
        ("FP8_DYNAMIC", "RTN", "QuantizationModifier"),
        ("W4A16", "GPTQ", "GPTQModifier"),
        ("W8A8", "GPTQ", "GPTQModifier"),
    ],
)
def test_one_modifier_per_algorithm(scheme: str, algorithm: str, modifier: str) -> None:
    q = Quantization(scheme=scheme, algorithm=algorithm, ignore=["lm_head", "re:.*gate$"])
    found = modifiers(q)
    print(scheme, algorithm, found)
    assert found == {modifier: {"targets": ["Linear"], "scheme": scheme, "ignore": ["lm_head", "re:.*gate$"]}}
    assert compress.needs_calibration(q) == (algorithm != "RTN")


def test_smoothquant_runs_before_gptq_with_its_strength() -> None:
    q = Quantization(scheme="W8A8", algorithm="SmoothQuantGPTQ", smoothing_strength=0.6)
    found = modifiers(q)
    assert list(found) == ["SmoothQuantModifier", "GPTQModifier"]  # the order they apply in
    assert found["SmoothQuantModifier"] == {"smoothing_strength": 0.6}
    assert found["GPTQModifier"] == {"targets": ["Linear"], "scheme": "W8A8", "ignore": ["lm_head"]}
    default = modifiers(Quantization(scheme="W8A8", algorithm="SmoothQuantGPTQ"))
    assert default["SmoothQuantModifier"] == {"smoothing_strength": compress.DEFAULT_SMOOTHING}
    assert compress.needs_calibration(q)


@pytest.mark.parametrize(
    ("scheme", "algorithm", "message"),
    [
        ("FP8_DYNAMIC", "GPTQ", "scheme FP8_DYNAMIC takes algorithm RTN"),
        ("W4A16", "SmoothQuantGPTQ", "SmoothQuantGPTQ smooths activations for W8A8, not W4A16"),
    ],
)
def test_combinations_llm_compressor_cannot_run_name_the_field(
    scheme: str, algorithm: str, message: str
) -> None:
    """The CRD's CEL refuses these first; a spec that got past it (built in Python) still fails clearly."""
    q = Quantization.model_construct(scheme=scheme, algorithm=algorithm, ignore=[], smoothing_strength=None)
    with pytest.raises(UserError, match=rf"spec\.method\.quantization: .*{message}"):
        compress.recipe(q)


# What llm-compressor 0.14 wrote into config.json for the tiny model (quantization_config, abridged).
CT = "compressed-tensors"
SAVED = {
    "W8A8": {"quant_method": CT, "format": "int-quantized", "quantization_status": "compressed"},
    "W4A16": {"quant_method": CT, "format": "pack-quantized", "quantization_status": "compressed"},
    "FP8_DYNAMIC": {"quant_method": CT, "format": "float-quantized"},
}


@pytest.mark.parametrize("scheme", sorted(SAVED))
def test_manifest_records_parent_recipe_and_quantization(tmp_path: Path, scheme: str) -> None:
    """register() keeps what serving needs (content.quantization, from config.json) and where the
    version came from (lineage.parent, lineage.recipe); a manifest read back compares equal."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"model_type": "llama", "quantization_config": SAVED[scheme]})
    )
    q = Quantization(scheme=scheme)
    recipe = compress.recipe(q)
    (model / compress.RECIPE_FILE).write_text(recipe)
    quantization = registry.Quantization.from_config(
        json.loads((model / "config.json").read_text()), scheme, "RTN"
    )
    from llmops.storage import LocalStore

    store = LocalStore(tmp_path / "registry")
    version = registry.register(
        store,
        "tiny-q",
        model,
        metrics={"perplexity": 500.0},
        gates=[],
        lineage=registry.Lineage(method="quantize", parent="tiny:1", recipe=recipe),
        content=registry.Content.from_saved({"format": "safetensors"}, "tiny:1", quantization),
    )
    on_disk = json.loads((tmp_path / "registry/models/tiny-q/versions/1/manifest.json").read_text())
    print(on_disk["content"], on_disk["lineage"]["parent"])
    layout = SAVED[scheme]["format"]
    assert on_disk["content"]["quantization"] == {
        "method": CT, "format": layout, "scheme": scheme, "algorithm": "RTN",
    }  # fmt: skip
    assert on_disk["lineage"]["parent"] == "tiny:1" and on_disk["lineage"]["recipe"] == recipe
    assert on_disk["content"]["base"] is None  # not an adapter: the parent is lineage.parent
    back = registry.read_version(store, "tiny-q", version.version)
    assert back == version and back.described.quantization == quantization


def test_an_unquantized_or_older_manifest_reads_as_not_quantized() -> None:
    assert registry.Quantization.from_config({"model_type": "llama"}) is None
    old = registry.ModelVersion.model_validate(
        {"name": "tiny", "version": "1", "createdAt": "2026-01-01T00:00:00Z", "artifacts": {}, "lineage": {}}
    )
    assert old.described.quantization is None and old.lineage.parent is None and old.lineage.recipe is None


def test_a_python_without_llm_compressor_is_named_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    """The compress task's child in an interpreter that lacks llm-compressor (the dev venv: vLLM's
    compressed-tensors pin keeps it out) ends with an error saying which Python and what to use instead;
    the run reports it as bad input (UserError), not as a crash. Real child process, no Ray."""
    from llmops.api.common import ObjectStorageLocation
    from llmops.training.context import StoreSpec
    from llmops.training.model import ModelSource

    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "config.json").write_text("{}")  # never loaded: the import fails first
    work = StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(tmp_path / "work")}}))
    base = ModelSource(
        "tiny:1", StoreSpec(ObjectStorageLocation.model_validate({"local": {"path": str(parent)}}))
    )
    monkeypatch.setenv(compress.OPTIMIZE_PYTHON, sys.executable)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    q = Quantization(scheme="W8A8")
    job = {"recipe": compress.recipe(q), "scheme": "W8A8", "algorithm": "RTN", "samples": 0, "threads": 1}
    found = compress.quantize_task(work, base, job, "uid-1")
    print(found)
    assert set(found) == {"error"}
    assert f"{sys.executable} has no llm-compressor" in found["error"]
    assert "images/optimizer" in found["error"] and "make venv-optimize" in found["error"]
    assert "LLMOPS_OPTIMIZE_PYTHON in the Ray head's environment" in found["error"]
