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


def smoke(tmp_path: Path, *args: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gpu_train_smoke.py"), "--device", "cpu", "--out", str(tmp_path),
         *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_training_smoke_trains_saves_evaluates_and_registers_on_the_cpu(method, tmp_path):
    """hack/gpu_train_smoke.py with gloo on the CPU: the example's method, the worker's model, batches,
    loss and bf16 autocast; then save_final (the merge), the Scorer on the held-out blocks, and a
    registration that downloads back with its checksums verified."""
    import json

    from llmops import registry
    from llmops.api.common import ModelReference
    from llmops.storage import LocalStore

    out = smoke(tmp_path, "--method", method, "--steps", "12")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "train_smoke.json").read_text())
    assert report["method"] == method and report["backend"] == "gloo" and report["ok"], report["checks"]
    loss = report["held_out_loss"]
    assert loss["merged"] < loss["base"]  # the saved model carries what training learned
    assert abs(loss["merged"] - loss["adapted"]) <= 1e-3 and loss["registered"] == loss["merged"]
    store = LocalStore(tmp_path / "registry")
    version = registry.resolve(store, ModelReference(name=f"smoke-{method}", alias="latest"))
    assert version.gates_passed and version.metrics["perplexity"] == pytest.approx(
        report["perplexity"]["merged"]
    )
    assert ("adapter/adapter_model.safetensors" in version.artifacts) == (method == "lora")
    assert "model.safetensors" in version.artifacts and version.lineage.method == method


def test_the_training_smoke_refuses_qlora_on_the_cpu_with_the_workloads_message(tmp_path):
    from llmops.training.errors import UserError
    from llmops.training.model import check_qlora_possible

    with pytest.raises(UserError) as workload:
        check_qlora_possible("qlora", 1, 0)
    out = smoke(tmp_path, "--method", "qlora")
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"GPU TRAIN SMOKE REFUSED: {workload.value}" in out.stderr
    assert not (tmp_path / "train_smoke.json").exists() and not (tmp_path / "model").exists()


def test_the_qlora_save_path_merges_the_adapter_into_the_bf16_base_on_the_cpu(tmp_path):
    """save_final's qlora branch (adapter saved, base reloaded in bf16, adapter merged) without the
    GPU-only part: the adapter is trained-like (random lora_B) on an unquantised base, since
    bitsandbytes' 4-bit kernels need CUDA. The merged folder, loaded as the evaluate stage loads it,
    scores as the adapted model does, to bf16 rounding."""
    import json

    import torch
    import yaml

    from llmops import jsonl
    from llmops.api.trainingjob import TrainingJobSpec
    from llmops.training.blocks import InMemory
    from llmops.training.evaluate import Scorer, held_out_loss
    from llmops.training.model import build, load_tokenizer, save_final
    from llmops.training.tiny import make_tiny_llama

    spec = TrainingJobSpec.model_validate(
        yaml.safe_load((ROOT / "examples" / "trainingjob-qlora.yaml").read_text())["spec"]
    )
    assert spec.method.lora is not None
    texts = [
        row["text"]
        for _, row in jsonl.read_path(ROOT / "llmops" / "training" / "data" / "quickstart" / "train.jsonl")
    ]
    base = make_tiny_llama(texts, tmp_path / "base")
    tokenizer = load_tokenizer(base)
    cfg = {
        "method": "qlora",
        "hyperparameters": spec.method.hyperparameters.model_dump(),
        "lora": spec.method.lora.model_dump(),
    }
    model = build(cfg | {"method": "lora"}, base, tokenizer, torch.device("cpu"))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    ids = torch.tensor(
        [tokenizer(t)["input_ids"][:64] for t in texts if len(tokenizer(t)["input_ids"]) >= 64][:8]
    ).numpy()
    lengths = torch.full((len(ids),), ids.shape[1]).numpy()
    held = InMemory(ids, lengths)
    model.eval()
    adapted, _ = held_out_loss(model, held, torch.device("cpu"))

    info = save_final(model, cfg, base, tokenizer, tmp_path / "model")

    assert info == {"format": "safetensors", "merged": True, "adapter": "adapter/"}
    assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"
    merged, _ = Scorer(tmp_path / "model", "cpu").perplexity(held)
    untouched, _ = Scorer(base, "cpu").perplexity(held)
    assert abs(merged - adapted) < abs(untouched - adapted) / 10, (merged, adapted, untouched)
