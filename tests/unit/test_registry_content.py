"""What a registered version holds (the manifest's `content`) and how serving reads it: the adapter's
folder in the vLLM argv, and the refusals that name the field. Pure: a local registry, no cluster.

The real chain (a lora TrainingJob on Ray, its version served by vLLM) is
tests/workloads/test_training_workload.py::test_lora_version_served_as_adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmops import engine, fetch
from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.modeldeployment.plan import Adapter, ServedVersion, ServingSettings
from llmops.operators.modeldeployment.versions import WrongContent, adapter, served_model
from llmops.operators.modeldeployment.vllm import vllm_deployment
from llmops.registry import (
    Content,
    Lineage,
    ModelVersion,
    Quantization,
    RegistryError,
    read_version,
    register,
)
from llmops.storage import LocalStore

EXAMPLES = Path(__file__).parents[2] / "examples"

# What training.model.save_final returns for a lora or qlora job, and for a full fine-tune.
SAVED_LORA = {"format": "safetensors", "merged": True, "adapter": "adapter/"}
SAVED_FULL = {"format": "safetensors", "merged": False}


def _lora_folder(root: Path) -> Path:
    """The layout save_final writes for LoRA: the merged model, and the adapter in adapter/."""
    (root / "adapter").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "adapter" / "adapter_config.json").write_text("{}")
    (root / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    return root


def test_content_from_what_training_saved() -> None:
    lora = Content.from_saved(SAVED_LORA, "tiny-base:1")
    assert (lora.kind, lora.merged, lora.adapter, lora.base, lora.format) == (
        "model", True, "adapter", "tiny-base:1", "safetensors",
    )  # fmt: skip
    full = Content.from_saved(SAVED_FULL, "tiny-base:1")
    assert (full.kind, full.merged, full.adapter, full.base) == ("model", False, None, None)


def test_register_writes_content_in_the_manifest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "registry")
    version = register(
        store,
        "tiny-lora",
        _lora_folder(tmp_path / "model"),
        metrics={},
        gates=[],
        lineage=Lineage(),
        content=Content.from_saved(SAVED_LORA, "tiny-base:1"),
    )
    on_disk = json.loads((tmp_path / "registry" / "models/tiny-lora/versions/1/manifest.json").read_text())
    assert on_disk["content"] == {
        "kind": "model",
        "format": "safetensors",
        "merged": True,
        "adapter": "adapter",
        "base": "tiny-base:1",
        "quantization": None,
    }
    assert read_version(store, "tiny-lora", version.version).described.adapter == "adapter"


def test_register_refuses_content_naming_a_missing_adapter(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(RegistryError, match=r"content\.adapter 'adapter'"):
        register(
            LocalStore(tmp_path / "registry"),
            "tiny",
            tmp_path / "model",
            metrics={},
            gates=[],
            lineage=Lineage(),
            content=Content(adapter="adapter", base="tiny-base:1"),
        )


def _version(content: dict | None) -> ModelVersion:
    body = {"name": "tiny-lora", "version": "3", "createdAt": "2026-01-01T00:00:00+00:00", "artifacts": {}}
    return ModelVersion.model_validate(body | ({"content": content} if content is not None else {}))


def test_operator_serves_the_adapter_sub_folder_in_the_argv() -> None:
    """The operator's resolution and builder: --lora-modules points at adapters/<name>/adapter."""
    served_adapter = adapter("billing", _version(Content.from_saved(SAVED_LORA, "tiny-base:1").model_dump()))
    assert served_adapter == Adapter("billing", "tiny-lora", "3", "adapter")
    doc = yaml.safe_load((EXAMPLES / "modeldeployment-lora-adapters.yaml").read_text())
    spec = ModelDeploymentSpec.model_validate(doc["spec"])
    spec = spec.model_copy(
        update={"engine": spec.engine.model_copy(update={"lora_adapters": spec.engine.lora_adapters[:1]})}
    )
    owner = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "md", "namespace": "demo", "uid": "u"},
    }
    served = ServedVersion(spec.model.name, "7", "stable", 100, "md-7-vllm")
    pod = vllm_deployment(spec, owner, served, (served_adapter,), ServingSettings())["spec"]["template"][
        "spec"
    ]
    argv = pod["containers"][0]["command"]
    assert argv[argv.index("--lora-modules") + 1] == f"billing={engine.MODEL_ROOT}/adapters/billing/adapter"
    fetch = pod["initContainers"][0]["command"]
    # Only the adapter's files are fetched, into adapters/billing/adapter/ (not the merged model).
    assert "adapters/billing=tiny-lora:3/adapter" in fetch


def test_fetch_takes_only_the_adapter_of_a_lora_version(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "registry")
    register(
        store,
        "tiny-lora",
        _lora_folder(tmp_path / "model"),
        metrics={},
        gates=[],
        lineage=Lineage(),
        content=Content.from_saved(SAVED_LORA, "tiny-base:1"),
    )
    item = engine.FetchItem.parse("adapters/billing=tiny-lora:1/adapter")
    assert item == engine.FetchItem("adapters/billing", "tiny-lora", "1", "adapter")
    assert engine.FetchItem.parse(item.arg()) == item
    target = fetch.fetch(store, item, tmp_path / "pod")
    got = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert got == [fetch.MARKER, "adapter/adapter_config.json", "adapter/adapter_model.safetensors"]
    assert fetch.fetch(store, item, tmp_path / "pod") == target  # complete: kept as it is
    with pytest.raises(RegistryError, match="no files under 'nothing'"):
        fetch.fetch(store, engine.FetchItem("adapters/x", "tiny-lora", "1", "nothing"), tmp_path / "pod")
    for bad in ("adapters/b=tiny-lora:1/../x", "adapters/b=tiny-lora:1//etc"):
        with pytest.raises(ValueError, match=r"FOLDER=NAME:VERSION\[/PATH\]"):
            engine.FetchItem.parse(bad)


def test_a_version_without_an_adapter_is_refused_under_lora_adapters() -> None:
    merged_only = _version(Content.from_saved(SAVED_FULL, None).model_dump())
    with pytest.raises(WrongContent, match=r"spec\.engine\.loraAdapters\[billing\]\.model: tiny-lora:3") as e:
        adapter("billing", merged_only)
    assert "a full model is served as spec.model" in str(e.value)
    with pytest.raises(WrongContent, match="predates the content record") as e:
        adapter("billing", _version(None))  # an old manifest: a full model, no adapter
    assert "spec.engine.loraAdapters[billing].model" in str(e.value)


def test_an_adapter_only_version_is_refused_as_spec_model() -> None:
    only = _version({"kind": "adapter", "adapter": "", "base": "tiny-base:1"})
    assert adapter("billing", only).path == ""
    with pytest.raises(WrongContent, match=r"spec\.model: tiny-lora:3 is a LoRA adapter.*tiny-base:1"):
        served_model(only, "spec.model")
    assert served_model(_version(None), "spec.model").described.kind == "model"


def test_quantization_is_read_from_the_saved_config() -> None:
    """What llm-compressor writes into config.json (quant_method, format) is what serving needs."""
    config = {
        "architectures": ["LlamaForCausalLM"],
        "quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized"},
    }
    record = Quantization.from_config(config, "W4A16", "GPTQ")
    assert record == Quantization(
        method="compressed-tensors", format="pack-quantized", scheme="W4A16", algorithm="GPTQ"
    )
    assert Quantization.from_config({"architectures": ["LlamaForCausalLM"]}) is None
    assert Quantization.from_config({"quantization_config": {"bits": 4}}) is None  # no method: unknown
    old = ModelVersion.model_validate(
        {"name": "m", "version": "1", "createdAt": "2026-01-01T00:00:00+00:00", "artifacts": {}}
    )
    assert old.described.quantization is None  # a manifest from before: not quantized
