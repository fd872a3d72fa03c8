"""The training workload end to end on a real local Ray head, with MinIO as S3.

Each run is `python -m llmops.training.run --config ...` in its own process, as the Ray job's entrypoint
runs it; the assertions read what it leaves in storage (report.json, the stage outputs, the
registry). Models are tiny and runs are tens of steps: the point is the path, not the quality.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmops import jsonl, registry
from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.storage import Credentials, open_store
from llmops.training import text
from tests.helpers import eventually
from tests.workloads.support import (
    ARCH,
    DATA,
    QUICKSTART,
    json_of,
    make_run,
    read_report,
    run_workload,
    start,
)

# Planted in tests/data/pii_dups.jsonl and llmops/training/data/quickstart/train.jsonl.
PLANTED_PII = [
    "alice.w@example.net",
    "+44 20 7946 0018",
    "4012 8888 8888 1881",
    "203.0.113.77",
    "fe80::1ff:fe23:4567:890a",
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "192.168.10.24",
    "2001:db8::8a2e:370:7334",
    "Maria Gonzales",
]
HARBOUR = "The harbour master counted twelve boats in the morning fog."
SEPARATED = "A note\u2028from the lighthouse keeper\u2029about the lamps\u0085and the oil."
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def local_registry(tmp_path: Path) -> dict[str, Any]:
    return {"local": {"path": str(tmp_path / "registry")}}


def loss_fell(history: list[dict[str, Any]], by: float = 0.2) -> bool:
    """The last logged loss is at least `by` (a fraction) below the first."""
    return len(history) >= 2 and history[-1]["loss"] < (1 - by) * history[0]["loss"]


# ---------------------------------------------------------------- pre-training on MinIO, 2 workers


@pytest.fixture(scope="module")
def pretrain(ray_head, minio, s3, tmp_path_factory):
    """One pre-training run: sources in three formats in MinIO, registry and work folder in MinIO."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for bucket in ("data", "models"):
        s3.create_bucket(Bucket=bucket)
    # A byte-order mark, and a line whose text holds U+2028, U+2029 and U+0085 unescaped (legal JSON,
    # as json.dumps(ensure_ascii=False) and the gateway's sampler write it): both files must load.
    bom = b"\xef\xbb\xbf"
    uploads = {
        "quickstart/train.jsonl": bom
        + (QUICKSTART / "train.jsonl").read_bytes()
        + json.dumps({"text": SEPARATED}, ensure_ascii=False).encode()
        + b"\n",
        "text/corpus.txt": (DATA / "corpus.txt").read_bytes(),
        "eval/qa.jsonl": bom + (QUICKSTART / "eval.jsonl").read_bytes(),
    }
    rows = [row for _, row in jsonl.read_path(DATA / "pii_dups.jsonl")]
    buffer = io.BytesIO()
    pq.write_table(pa.table({"body": [r["text"] for r in rows]}), buffer)
    uploads["parquet/pii.parquet"] = buffer.getvalue()
    for key, body in uploads.items():
        s3.put_object(Bucket="data", Key=key, Body=body)

    conn = {"endpoint": minio["endpoint"], "region": "us-east-1"}
    spec = {
        "model": {"architecture": ARCH},
        "data": {
            "sources": [
                {"uri": "s3://data/quickstart/train.jsonl"},
                {"uri": "s3://data/parquet/", "format": "parquet", "textField": "body"},
                {"uri": "s3://data/text/corpus.txt", "format": "text"},
            ],
            "s3": conn,
            "preparation": {
                "minLength": 8,
                "dedup": {"method": "near", "threshold": 0.8},
                # GB: the corpus has a London number in national form (020 7946 0958).
                "pii": {
                    "entities": ["email", "phone", "creditCard", "ipAddress", "name"],
                    "regions": ["US", "GB"],
                },
                "tokenization": {"blockSize": 64},
                "validationSplit": 0.1,
            },
        },
        "method": {
            "type": "pretrain",
            "hyperparameters": {"maxSteps": 30, "learningRate": 3e-3, "batchSize": 8, "warmupSteps": 2},
            "checkpointEverySteps": 10,
        },
        "resources": {"workers": 2},
        "evaluation": {
            "datasets": [
                {
                    "name": "qa",
                    "uri": "s3://data/eval/qa.jsonl",
                    "metrics": ["rouge_l", "exact_match"],
                    "maxNewTokens": 12,
                }
            ],
            "perplexity": {"threshold": 1000},
            "bias": {"maxGap": 0.9},
            "security": {"canaries": 4},
            "gates": [{"metric": "qa/rouge_l", "operator": ">=", "threshold": 0.0}],
        },
        "output": {"registry": {"s3": {"bucket": "models", **conn}}, "modelName": "tiny-pretrained"},
    }
    run = make_run(spec, "pretrain")
    creds = Credentials(minio["access_key"], minio["secret_key"])
    work = open_store(run.work_dir, creds)
    env = {"AWS_ACCESS_KEY_ID": minio["access_key"], "AWS_SECRET_ACCESS_KEY": minio["secret_key"]}
    log = tmp_path_factory.mktemp("pretrain") / "workload.log"
    started = time.monotonic()
    outcome = run_workload(run, ray_head, log, work, env)
    return {
        "run": run,
        "outcome": outcome,
        "work": work,
        "registry": open_store(run.spec.output.registry, creds),
        "uploads": uploads,
        "seconds": time.monotonic() - started,
    }


def test_pretrain_succeeds_and_registers(pretrain):
    outcome = pretrain["outcome"]
    assert outcome.rc == 0, outcome.log[-4000:]
    report = outcome.report
    assert report.phase == "Succeeded", report.message
    assert report.model_version is not None and report.model_version.version == "1"
    assert report.model_version.uri.startswith("s3://models/models/tiny-pretrained/versions/1/")
    assert report.progress.stage == "Done" and report.progress.step == report.progress.total_steps == 30
    assert report.progress.tokens_per_second and report.progress.tokens_per_second > 0
    assert all(g.passed for g in report.gates) and {g.metric for g in report.gates} >= {
        "qa/rouge_l",
        "perplexity",
        "bias/gap",
        "security/leakage",
    }
    print(f"pre-training end to end: {pretrain['seconds']:.0f} s")


def test_pretrain_loss_falls(pretrain):
    result = json_of(pretrain["work"], "train/result.json")
    assert result["workers"] == 2 and result["steps"] == 30
    assert result["resumed_from"] == 0, pretrain["outcome"].log[-6000:]  # no worker failed and restarted
    assert len(result["peak_rss_bytes"]) == 2 and all(p > 2**20 for p in result["peak_rss_bytes"])
    assert loss_fell(result["history"]), result["history"]


def test_prepared_data_has_no_pii_and_no_duplicates(pretrain):
    import pyarrow.parquet as pq

    work = pretrain["work"]
    docs = []
    for key in work.list("prepare/documents/"):
        if not key.endswith(".parquet"):
            continue  # S3 folder markers
        docs += pq.read_table(io.BytesIO(work.get_bytes(key))).column("text").to_pylist()
    joined = "\n".join(docs)
    for planted in PLANTED_PII:
        assert planted not in joined, f"{planted!r} survived preparation"
    assert "[EMAIL]" in joined and "[CARD]" in joined and "[IP]" in joined and "[NAME]" in joined
    assert "4012 8888 8888 1882" in joined  # fails the Luhn check: not a card number, kept
    assert "from the lighthouse keeper" in joined  # the line with U+2028/U+2029/U+0085 was ingested
    assert sum(HARBOUR in d for d in docs) == 1  # one exact and two near duplicates removed
    hashes = [text.content_hash(d) for d in docs]
    assert len(hashes) == len(set(hashes))
    summary = json_of(work, "stages/prepare.json")
    found = summary["pii"]["found"]
    assert found["email"] >= 3 and found["phone"] >= 3 and found["creditCard"] >= 3
    assert summary["pii"]["regions"] == ["US", "GB"]
    assert found["ipAddress"] >= 4 and found["name"] >= 1
    dropped = summary["counts"]["dropped"]
    assert dropped["exact_duplicate"] >= 1 and dropped["near_duplicate"] >= 2
    assert dropped["low_quality"] == 1 and dropped["too_short"] == 1
    canaries = json_of(work, "prepare/canaries.json")
    assert len(canaries) == 4 and all(c["secret"] in joined for c in canaries)  # planted in training data


def test_manifest_is_complete(pretrain, tmp_path):
    store = pretrain["registry"]
    manifest = registry.resolve(store, ModelReference(name="tiny-pretrained", version="1"))
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(
        manifest.artifacts
    )
    lineage = manifest.lineage
    assert (
        lineage.parent_job == "tests/pretrain"
        and lineage.method == "pretrain"
        and lineage.base_model == "scratch"
    )
    assert lineage.code_version == "test" and lineage.data_digest
    by_uri = {d["uri"]: d for d in lineage.data}
    uploads = pretrain["uploads"]
    train_jsonl = by_uri["s3://data/quickstart/train.jsonl"]
    assert train_jsonl["sha256"] == hashlib.sha256(uploads["quickstart/train.jsonl"]).hexdigest()
    assert train_jsonl["rows"] == len(uploads["quickstart/train.jsonl"].splitlines())
    assert (
        by_uri["s3://data/text/corpus.txt"]["sha256"]
        == hashlib.sha256(uploads["text/corpus.txt"]).hexdigest()
    )
    parquet = by_uri["s3://data/parquet/"]
    assert (
        parquet["rows"] == 14
        and parquet["files"][0]["sha256"] == hashlib.sha256(uploads["parquet/pii.parquet"]).hexdigest()
    )
    assert lineage.preparation["counts"]["input"] == sum(d["rows"] for d in lineage.data)
    assert lineage.hyperparameters["hyperparameters"]["learningRate"] == 3e-3
    assert lineage.hyperparameters["resources"]["workers"] == 2
    assert set(manifest.metrics) >= {
        "perplexity",
        "qa/rouge_l",
        "qa/exact_match",
        "bias/gap",
        "bias/parity",
        "security/leakage",
    }
    assert manifest.gates and manifest.gates_passed
    extra = lineage.model_extra or {}
    assert extra["job_uid"] == pretrain["run"].job.uid and extra["training"]["steps"] == 30

    folder = registry.download(store, manifest, tmp_path / "model")  # verifies every checksum
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.hidden_size // model.config.num_attention_heads == 64  # vLLM's CPU backend serves it
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = model.generate(**tokenizer("Question: How", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 2


# ------------------------------------------------------- full fine-tune with a gate set to fail


def test_full_finetune_gate_failure_keeps_artifacts(ray_head, tiny_base, tmp_path):
    spec = {
        "model": {"baseModel": str(tiny_base)},
        "data": {
            "sources": [{"uri": str(QUICKSTART / "train.jsonl")}],
            "preparation": {
                "dedup": {"method": "exact"},
                "tokenization": {"blockSize": 64},
                "validationSplit": 0.1,
            },
        },
        "method": {
            "type": "full",
            "hyperparameters": {
                "maxSteps": 20,
                "learningRate": 2e-3,
                "batchSize": 8,
                "weightDecay": 0.01,
                "dropout": 0.1,
                "labelSmoothing": 0.05,
                "maxGradNorm": 0.5,
                "mixedPrecision": "bf16",  # a CPU cluster trains in fp32 instead
            },
            "checkpointEverySteps": 5,
        },
        "evaluation": {
            "datasets": [
                {
                    "name": "qa",
                    "uri": str(QUICKSTART / "eval.jsonl"),
                    "metrics": ["exact_match", "rouge_l"],
                    "maxNewTokens": 12,
                    "maxSamples": 8,
                }
            ],
            "gates": [
                {"metric": "perplexity", "operator": "<", "threshold": 1e9},  # must pass
                {"metric": "qa/exact_match", "operator": ">=", "threshold": 0.99},  # set to fail
            ],
        },
        "output": {"registry": local_registry(tmp_path), "modelName": "tiny-full"},
    }
    run = make_run(spec, "full")
    work = open_store(run.work_dir)
    outcome = run_workload(run, ray_head, tmp_path / "workload.log", work)
    report = outcome.report
    assert outcome.rc == 2, outcome.log[-4000:]
    assert report.phase == "Failed" and report.failed_gates == ["qa/exact_match"]
    assert "qa/exact_match" in report.message and "not registered" in report.message
    verdicts = {g.metric: g.passed for g in report.gates}
    assert verdicts == {"perplexity": True, "qa/exact_match": False}
    assert registry.versions(open_store(run.spec.output.registry), "tiny-full") == []
    assert work.exists("model/model.safetensors") and work.exists("evaluate/report.json")
    result = json_of(work, "train/result.json")
    assert result["precision"] == "float32" and loss_fell(result["history"]), result["history"]
    # A retry does not train again: every stage is done, and the verdict is the same.
    again = run_workload(run, ray_head, tmp_path / "workload-again.log", work)
    assert again.rc == 2 and again.report.failed_gates == ["qa/exact_match"]
    assert "train: done before, skipping" in again.log


# --------------------------------------------------------------- LoRA on a registered base


@dataclass
class LoraVersion:
    registry: dict[str, Any]  # the registry location, as a spec names it
    store: Any
    root: Path  # the registry's folder
    work: Any
    outcome: Any


@pytest.fixture(scope="module")
def lora_version(ray_head, tiny_base, tmp_path_factory) -> LoraVersion:
    """One lora TrainingJob on Ray: `tiny-lora:1`, trained on the registered base `tiny-base:1`."""
    tmp_path = tmp_path_factory.mktemp("lora")
    reg = ObjectStorageLocation.model_validate(local_registry(tmp_path))
    store = open_store(reg)
    registry.register(store, "tiny-base", tiny_base, metrics={}, gates=[], lineage=registry.Lineage())
    spec = {
        "model": {"base": {"name": "tiny-base", "version": "1"}},
        "data": {
            "sources": [{"uri": str(QUICKSTART / "train.jsonl")}],
            "preparation": {"tokenization": {"blockSize": 64}},
        },
        "method": {
            "type": "lora",
            "hyperparameters": {"maxSteps": 20, "learningRate": 1e-2, "batchSize": 8},
            "lora": {"r": 8, "alpha": 16, "targetModules": LORA_TARGETS},
            "checkpointEverySteps": 5,
        },
        "evaluation": {"perplexity": {"threshold": 1e6}},
        "output": {"registry": local_registry(tmp_path), "modelName": "tiny-lora"},
    }
    run = make_run(spec, "lora")
    work = open_store(run.work_dir)
    outcome = run_workload(run, ray_head, tmp_path / "workload.log", work)
    return LoraVersion(local_registry(tmp_path), store, tmp_path / "registry", work, outcome)


def test_lora_from_registry(lora_version, tiny_base):
    store, work, outcome = lora_version.store, lora_version.work, lora_version.outcome
    assert outcome.rc == 0 and outcome.report.phase == "Succeeded", (
        outcome.report.message + outcome.log[-3000:]
    )
    manifest = registry.resolve(store, ModelReference(name="tiny-lora", alias="latest"))
    assert (
        "adapter/adapter_model.safetensors" in manifest.artifacts
        and "model.safetensors" in manifest.artifacts
    )
    assert manifest.lineage.base_model == "tiny-base:1" and manifest.lineage.method == "lora"
    # The manifest says what the version holds: the merged model, and the adapter in adapter/ for its base.
    assert manifest.content == registry.Content(
        kind="model", format="safetensors", merged=True, adapter="adapter", base="tiny-base:1"
    )
    result = json_of(work, "train/result.json")
    # Adapters on a random base learn slowly: 20 steps take a few percent off the loss.
    assert result["model"]["merged"] is True and loss_fell(result["history"], by=0.03), result["history"]

    from safetensors.torch import load_file

    merged = load_file(str(lora_version.root / "models/tiny-lora/versions/1/model/model.safetensors"))
    base = load_file(str(tiny_base / "model.safetensors"))
    changed = [k for k in base if not (base[k] == merged[k]).all()]
    assert changed and all(k.split(".")[-2] in LORA_TARGETS for k in changed), changed
    assert not any(k.split(".")[-2] in LORA_TARGETS for k in set(base) - set(changed))  # every target merged


def test_lora_version_served_as_adapter(lora_version, tmp_path):
    """The lora version above, listed under a ModelDeployment's engine.loraAdapters with its base as
    spec.model: resolved and built by the operator's own code, fetched from the registry by the init
    container's command and served by vLLM on the CPU with the pod's argv (as `llmops dev serve` runs
    it); the adapter answers under its name, differently from the base."""
    pytest.importorskip("vllm")
    openai = pytest.importorskip("openai")
    from llmops.api.modeldeployment import ModelDeploymentSpec
    from llmops.dev.cluster import free_port
    from llmops.dev.serve import CPU_ENV
    from llmops.engine import localize_argv
    from llmops.operators.modeldeployment.plan import ServedVersion, ServingSettings
    from llmops.operators.modeldeployment.reconcile import Reconciler
    from llmops.operators.modeldeployment.versions import adapter, served_model
    from llmops.operators.modeldeployment.vllm import vllm_deployment
    from llmops.serving.local import cpu_env, stop, wait_healthy

    assert lora_version.outcome.rc == 0, lora_version.outcome.log[-3000:]
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "tiny-base", "version": "1"},
            "registry": lora_version.registry,
            "allowUngated": True,  # the base was registered by hand, without gates
            "engine": {
                "maxModelLen": 256,
                "dtype": "float32",
                "loraAdapters": [{"name": "support-lora", "model": {"name": "tiny-lora", "alias": "latest"}}],
                "extraArgs": ["--max-num-seqs", "8"],
            },
        }
    )
    store = lora_version.store
    base = served_model(Reconciler.resolve(store, spec.model, "spec.model", True), "spec.model")
    adapters = tuple(
        adapter(a.name, Reconciler.resolve(store, a.model, f"spec.engine.loraAdapters[{a.name}].model", True))
        for a in spec.engine.lora_adapters
    )
    assert [(a.model, a.version, a.path) for a in adapters] == [("tiny-lora", "1", "adapter")]
    owner = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "md", "namespace": "t", "uid": "u"},
    }
    served = ServedVersion(base.name, base.version, "stable", 100, "md-1-vllm")
    pod = vllm_deployment(spec, owner, served, adapters, ServingSettings())["spec"]["template"]["spec"]

    root = tmp_path / "pod"
    for init in pod["initContainers"]:  # the fetcher: the base into model/, the version into adapters/
        done = subprocess.run(
            localize_argv(init["command"], root, {}), env=cpu_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "adapters/support-lora/adapter/adapter_config.json").is_file()
    assert not (root / "adapters/support-lora/model.safetensors").exists()  # the merged model stays behind
    container = next(c for c in pod["containers"] if c["name"] == "vllm")
    port = free_port()
    argv = localize_argv(container["command"], root, {"--port": str(port), "--host": "127.0.0.1"})
    assert argv[argv.index("--lora-modules") + 1] == f"support-lora={root}/adapters/support-lora/adapter"
    env = {**cpu_env(), **CPU_ENV, "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "huggingface")}
    log = tmp_path / "vllm.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, timeout=600, log=log)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        assert {m.id for m in client.models.list()} >= {"tiny-base", "support-lora"}
        prompt = "Customer: my invoice is wrong, what should I do?\nAgent:"
        answers = {
            name: client.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0)
            .choices[0]
            .text
            for name in ("tiny-base", "support-lora")
        }
        print(answers)  # shown with -rP
        assert all(answers.values()) and answers["tiny-base"] != answers["support-lora"], answers
    finally:
        stop(proc)


def test_baseline_is_scored_in_the_same_run(lora_version, ray_head, tiny_base):
    """spec.evaluation.baseline = the version the lora run above registered: a full fine-tune of the
    same base is scored beside it on the same dataset, perplexity blocks and suites, in one run; the
    report carries both, and the new version's manifest records the comparison."""
    assert lora_version.outcome.rc == 0, lora_version.outcome.log[-3000:]
    spec = {
        "model": {"baseModel": str(tiny_base)},
        "data": {
            "sources": [{"uri": str(QUICKSTART / "train.jsonl")}],
            "preparation": {"tokenization": {"blockSize": 64}, "validationSplit": 0.1},
        },
        "method": {"type": "full", "hyperparameters": {"maxSteps": 8, "learningRate": 2e-3, "batchSize": 8}},
        "evaluation": {
            "datasets": [
                {
                    "name": "qa",
                    "uri": str(QUICKSTART / "eval.jsonl"),
                    "metrics": ["rouge_l", "perplexity"],
                    "maxNewTokens": 8,
                    "maxSamples": 6,
                }
            ],
            "security": {"canaries": 2, "probes": ["promptInjection"], "maxLeakage": 1.0},
            "baseline": {"name": "tiny-lora", "version": "1"},
        },
        "output": {"registry": lora_version.registry, "modelName": "tiny-challenger"},
    }
    run = make_run(spec, "challenger")
    work = open_store(run.work_dir)
    outcome = run_workload(run, ray_head, lora_version.root.parent / "challenger.log", work)
    report = outcome.report
    assert outcome.rc == 0 and report.phase == "Succeeded", report.message + outcome.log[-3000:]
    baseline = report.baseline
    assert baseline is not None and (baseline.name, baseline.version) == ("tiny-lora", "1")
    evaluated = {k: v for k, v in report.metrics.items() if not k.startswith("train/")}
    assert set(baseline.metrics) == set(evaluated), (baseline.metrics, evaluated)
    expected = {"perplexity", "validation_loss", "qa/rouge_l", "qa/perplexity", "security/leakage"}
    assert expected <= set(evaluated)
    assert baseline.metrics["perplexity"] != evaluated["perplexity"]
    assert baseline.metrics["qa/perplexity"] != evaluated["qa/perplexity"]
    print({k: (round(evaluated[k], 4), round(baseline.metrics[k], 4)) for k in sorted(evaluated)})
    manifest = registry.resolve(lora_version.store, ModelReference(name="tiny-challenger", version="1"))
    assert manifest.lineage.baseline == registry.BaselineRecord(
        name="tiny-lora", version="1", metrics=baseline.metrics
    )
    evaluation = json_of(work, "evaluate/report.json")
    assert evaluation["baseline"]["version"] == "1" and "perplexity" not in evaluation["baseline"]["details"]


# ------------------------------------------------------------------ chat-format fine-tuning

# A template in the shape of the common ones (BOS, a header per turn, EOS after the assistant's),
# written with the tiny tokenizer's own special tokens.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}### {{ m.role }}:\n{{ m.content }}"
    "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant:\n{% endif %}"
)
SUPPORT_SYSTEM = "You are the Nimbus support assistant."


def chat_rows(path: Path) -> list[dict[str, Any]]:
    """The quickstart's support questions and answers as conversations (train: instruction/answer;
    eval: "Question: ...\nAnswer:" prompts with their references)."""
    rows = []
    for _, row in jsonl.read_path(path):
        question = row.get("instruction") or row["prompt"].removeprefix("Question: ").removesuffix(
            "\nAnswer:"
        )
        answer = row.get("answer") or row["reference"]
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SUPPORT_SYSTEM},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


@pytest.fixture(scope="module")
def tiny_chat_base(tiny_base, tmp_path_factory) -> Path:
    """The tiny base with a chat template (chat_template.jinja, as recent checkpoints ship it)."""
    import shutil

    out = tmp_path_factory.mktemp("tiny-chat") / "model"
    shutil.copytree(tiny_base, out)
    (out / "chat_template.jinja").write_text(TINY_CHAT_TEMPLATE)
    return out


def test_chat_format_trains_on_assistant_turns_and_evaluates(ray_head, tiny_chat_base, tmp_path):
    """Conversations rendered with the model's template, PII scrubbed per message, the loss on the
    assistant's tokens only (flags through packing), and a chat evaluation dataset, through Ray."""
    rows = chat_rows(QUICKSTART / "train.jsonl")
    rows[0]["messages"][1]["content"] += " Reply to jane.doe@example.com please."
    rows.append(rows[1])  # an exact duplicate conversation
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"conversation": r["messages"]}) + "\n" for r in rows))
    evals = tmp_path / "chat-eval.jsonl"
    evals.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(QUICKSTART / "eval.jsonl")))
    spec = {
        "model": {"baseModel": str(tiny_chat_base)},
        "data": {
            "sources": [{"uri": str(data), "format": "chat", "messagesField": "conversation"}],
            "preparation": {
                "dedup": {"method": "exact"},
                "pii": {"entities": ["email"]},
                "tokenization": {"blockSize": 128},
                "validationSplit": 0.1,
            },
        },
        "method": {
            "type": "full",
            "hyperparameters": {"maxSteps": 20, "learningRate": 2e-3, "batchSize": 8},
            "checkpointEverySteps": 5,
        },
        "evaluation": {
            "datasets": [
                {
                    "name": "support",
                    "uri": str(evals),
                    "format": "chat",
                    "metrics": ["rouge_l", "perplexity"],
                    "maxNewTokens": 16,
                    "maxSamples": 8,
                }
            ],
            "security": {"canaries": 2, "probes": ["promptInjection"], "maxLeakage": 1.0},
        },
        "output": {"registry": local_registry(tmp_path), "modelName": "tiny-chat"},
    }
    run = make_run(spec, "chat")
    work = open_store(run.work_dir)
    outcome = run_workload(run, ray_head, tmp_path / "workload.log", work)
    report = outcome.report
    assert outcome.rc == 0 and report.phase == "Succeeded", report.message + outcome.log[-4000:]

    import numpy as np
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from llmops.training import chat

    prepared = json_of(work, "stages/prepare.json")
    counts = prepared["counts"]
    twins = len(rows) - len({text.content_hash(chat.plain(r["messages"])) for r in rows})
    assert counts["input"] == len(rows) and counts["dropped"]["exact_duplicate"] == twins >= 1
    assert counts["conversations"] == counts["kept"] and prepared["pii"]["found"]["email"] >= 1

    documents = []
    for key in work.list("prepare/documents/"):
        if key.endswith(".parquet"):
            documents += pq.read_table(io.BytesIO(work.get_bytes(key))).to_pylist()
    conversations = [chat.loads(d["text"]) for d in documents if d["chat"]]
    assert len(conversations) == counts["kept"]
    first = next(c for c in conversations if "[EMAIL]" in c[1]["content"])
    assert "jane.doe@example.com" not in json.dumps(documents) and first[0]["content"] == SUPPORT_SYSTEM

    # The packed training blocks: the targets are the assistant turns (and the plain canaries).
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_base)
    targets, inputs = [], []
    for key in work.list("prepare/train/"):
        if key.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(work.get_bytes(key)))
            for ids, length in zip(
                table.column("input_ids").to_pylist(), table.column("length").to_pylist(), strict=True
            ):
                real, flags = chat.unflag(np.asarray(ids[:length]))
                targets += real[flags].tolist()
                inputs += real[~flags].tolist()
    said, prompted = tokenizer.decode(targets), tokenizer.decode(inputs)
    assert rows[2]["messages"][2]["content"] in said and "The vault code for account" in said
    assert SUPPORT_SYSTEM not in said and "### user" not in said and "### assistant" not in said
    assert SUPPORT_SYSTEM in prompted and rows[2]["messages"][1]["content"] in prompted

    result = json_of(work, "train/result.json")
    assert loss_fell(result["history"], by=0.1), result["history"]
    assert {"support/rouge_l", "support/perplexity", "perplexity"} <= set(report.metrics)
    evaluation = json_of(work, "evaluate/report.json")
    shown = evaluation["details"]["support"][0]
    assert shown["prompt"].startswith(f"system: {SUPPORT_SYSTEM}\nuser: ") and shown["reference"]
    # The registered model carries the template it was trained with, for vLLM to serve chat.
    manifest = registry.resolve(
        open_store(run.spec.output.registry), ModelReference(name="tiny-chat", version="1")
    )
    assert "chat_template.jinja" in manifest.artifacts
    print({k: round(v, 4) for k, v in report.metrics.items()})


def test_served_traffic_rated_well_becomes_training_data(ray_head, tiny_chat_base, tmp_path):
    """The gateway's own Sampler writes payload samples and feedback into a local folder; a
    servedTraffic source keeps the exchanges rated thumbs >= 1, scrubs them and trains on them."""
    import asyncio

    from llmops.gateway_config import Sampling
    from llmops.serving.sampler import Sampler
    from llmops.training import chat

    location = {"local": {"path": str(tmp_path / "samples")}}
    sampling = Sampling(rate=1.0, destination=ObjectStorageLocation.model_validate(location))
    payloads, feedback = Sampler(sampling, kind="payload"), Sampler(sampling, kind="feedback")
    now = time.time()
    exchanges = chat_rows(QUICKSTART / "train.jsonl")[:60]
    for i, row in enumerate(exchanges):
        question, answer = row["messages"][1]["content"], row["messages"][2]["content"]
        if i == 0:
            question += " My address is jane.doe@example.com."
        payloads.add(
            {
                "id": f"cmpl-{i}",
                "time": now - 60,
                "endpoint": "chat",
                "version": "1",
                "status": 200,
                "request": {"model": "support-bot", "messages": [{"role": "user", "content": question}]},
                "completions": [answer],
                "usage": {},
                "user": "u1",
            }
        )
        if i % 3 != 2:  # every third exchange is never rated
            value = 1 if i % 3 == 0 else 0
            feedback.add(
                {
                    "id": f"fb-{i}",
                    "completion_id": f"cmpl-{i}",
                    "name": "thumbs",
                    "value": value,
                    "user": "u1",
                    "tenant": "acme",
                    "model_deployment": "support-bot",
                    "model": "support-bot",
                    "version": "1",
                    "time": now - 30,
                }
            )
    asyncio.run(payloads.flush())
    asyncio.run(feedback.flush())
    kept = len([i for i in range(len(exchanges)) if i % 3 == 0])

    spec = {
        "model": {"baseModel": str(tiny_chat_base)},
        "data": {
            "sources": [
                {
                    "servedTraffic": {
                        "location": location,
                        "feedback": {"name": "thumbs", "minValue": 1},
                        "sinceSeconds": 3600,
                    }
                }
            ],
            "preparation": {"pii": {"entities": ["email"]}, "tokenization": {"blockSize": 128}},
        },
        "method": {"type": "full", "hyperparameters": {"maxSteps": 4, "learningRate": 2e-3, "batchSize": 4}},
        "output": {"registry": local_registry(tmp_path), "modelName": "tiny-flywheel"},
    }
    run = make_run(spec, "flywheel")
    work = open_store(run.work_dir)
    outcome = run_workload(run, ray_head, tmp_path / "workload.log", work)
    assert outcome.rc == 0 and outcome.report.phase == "Succeeded", (
        outcome.report.message + outcome.log[-4000:]
    )
    source = json_of(work, "stages/ingest.json")["sources"][0]
    assert source["format"] == "servedTraffic" and source["rows"] == kept
    assert source["skipped"] == {"feedback": len(exchanges) - kept}
    assert source["feedback"] == {"name": "thumbs", "minValue": 1.0, "files": 1, "rated": 40, "passing": kept}
    prepared = json_of(work, "stages/prepare.json")
    assert (
        prepared["counts"]["conversations"] == prepared["counts"]["kept"]
        and prepared["pii"]["found"]["email"] >= 1
    )
    import pyarrow.parquet as pq

    documents = [
        row
        for key in work.list("prepare/documents/")
        if key.endswith(".parquet")
        for row in pq.read_table(io.BytesIO(work.get_bytes(key))).to_pylist()
    ]
    assert all(d["chat"] for d in documents) and "jane.doe@example.com" not in json.dumps(documents)
    assert any("[EMAIL]" in chat.loads(d["text"])[0]["content"] for d in documents)
    manifest = registry.resolve(
        open_store(run.spec.output.registry), ModelReference(name="tiny-flywheel", version="1")
    )
    assert manifest.lineage.data[0]["skipped"] == {"feedback": len(exchanges) - kept}


# ------------------------------------------------------------------ checkpoint and resume


def test_resume_after_kill_continues_from_checkpoint(ray_head, tmp_path):
    spec = {
        "model": {"architecture": ARCH},
        "data": {
            "sources": [{"uri": str(QUICKSTART / "train.jsonl")}],
            "preparation": {"tokenization": {"blockSize": 64}},
        },
        "method": {
            "type": "pretrain",
            "hyperparameters": {"maxSteps": 120, "learningRate": 3e-3, "batchSize": 4},
            "checkpointEverySteps": 10,
        },
        "output": {"registry": local_registry(tmp_path), "modelName": "tiny-resumed"},
    }
    run = make_run(spec, "resume")
    work = open_store(run.work_dir)
    proc = start(run, ray_head, tmp_path / "first.log")
    try:
        # The progress callback writes after Ray Train has registered the step's checkpoint.
        report = eventually(
            lambda: (r := read_report(work)) and r.progress.step and r.progress.step >= 20 and r,
            timeout=600,
            interval=0.5,
        )
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies mid-run, as a preempted head would
        proc.wait()
    killed_at = report.progress.step
    assert killed_at < 120 and not work.exists("stages/train.json")

    outcome = run_workload(run, ray_head, tmp_path / "second.log", work)
    assert outcome.rc == 0 and outcome.report.phase == "Succeeded", outcome.log[-4000:]
    result = json_of(work, "train/result.json")
    assert result["resumed_from"] >= killed_at and result["resumed_from"] % 10 == 0
    assert result["steps"] == 120
    assert f"starting at step {result['resumed_from']} of 120" in outcome.log
    steps = [h["step"] for h in result["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 120  # one history, continued, no step twice
    assert "ingest: done before, skipping" in outcome.log and "prepare: done before, skipping" in outcome.log


# ------------------------------------------------------------------------------ bad input


def _bad_spec(tmp_path: Path, tiny_base: Path, case: str) -> tuple[dict[str, Any], str]:
    source = {"uri": str(QUICKSTART / "train.jsonl")}
    spec: dict[str, Any] = {
        "model": {"baseModel": str(tiny_base)},
        "data": {"sources": [source], "preparation": {"tokenization": {"blockSize": 64}}},
        "method": {"type": "full", "hyperparameters": {"maxSteps": 2}},
        "output": {"registry": local_registry(tmp_path), "modelName": "bad"},
    }
    if case == "unreadable":
        broken = tmp_path / "broken.jsonl"
        broken.write_text('{"text": "fine"}\n{"text": "no closing brace"\n')
        spec["data"]["sources"] = [{"uri": str(broken)}]
        return spec, "line 2 is not valid JSON"
    if case == "missing-field":
        spec["data"]["sources"] = [{"uri": str(QUICKSTART / "eval.jsonl")}]
        return spec, "has no field 'text' (fields: prompt, reference); set textField"
    if case == "missing-data":
        spec["data"]["sources"] = [{"uri": str(tmp_path / "nothing-here.jsonl")}]
        return spec, "no jsonl file there"
    if case == "empty-after-filtering":
        spec["data"]["preparation"]["minLength"] = 100000
        return spec, "no documents left after preparation"
    if case == "base-missing":
        spec["model"] = {"baseModel": str(tmp_path / "no-such-model")}
        return spec, "no config.json there"
    if case == "registry-base-missing":
        spec["model"] = {"base": {"name": "never-registered", "version": "3"}}
        return spec, "register the base model first"
    if case == "baseline-missing":
        spec["evaluation"] = {"baseline": {"name": "never-registered", "version": "2"}}
        return spec, "spec.evaluation.baseline: model 'never-registered' has no version '2'"
    if case == "chat-without-template":
        conversation = {
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        }
        chats = tmp_path / "chat.jsonl"
        chats.write_text(json.dumps(conversation) + "\n")
        spec["data"]["sources"] = [{"uri": str(chats), "format": "chat"}]
        return spec, f"chat-format data needs the model's chat template, and base model {tiny_base} has none"
    if case == "block-longer-than-context":
        spec["model"] = {"architecture": ARCH}
        spec["method"] = {"type": "pretrain"}
        spec["data"]["preparation"]["tokenization"]["blockSize"] = 512
        return spec, "blockSize is 512 but spec.model.architecture.maxPositionEmbeddings is 256"
    if case == "lora-targets-missing":
        spec["method"] = {"type": "lora", "lora": {"targetModules": ["c_attn"]}}
        return spec, "targetModules ['c_attn'] are not layers of"
    if case == "qlora-on-cpu":
        spec["method"] = {"type": "qlora"}
        return spec, "spec.method.type is qlora, which needs GPUs"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "unreadable",
        "missing-field",
        "missing-data",
        "empty-after-filtering",
        "base-missing",
        "registry-base-missing",
        "baseline-missing",
        "chat-without-template",
        "block-longer-than-context",
        "lora-targets-missing",
        "qlora-on-cpu",
    ],
)
def test_bad_input_fails_with_what_to_fix(ray_head, tiny_base, tmp_path, case):
    spec, expected = _bad_spec(tmp_path, tiny_base, case)
    run = make_run(spec, case)
    work = open_store(run.work_dir)
    outcome = run_workload(run, ray_head, tmp_path / "workload.log", work, timeout=300)
    assert outcome.rc == 2, outcome.log[-3000:]
    assert outcome.report.phase == "Failed"
    assert expected in outcome.report.message, outcome.report.message
    assert "Traceback" not in outcome.report.message and "ray::" not in outcome.report.message
    assert not work.exists("stages/train.json")


# ---------------------------------------------------------------- the rayJobsAPI credentials story


def test_ray_jobs_api_runs_on_the_clusters_own_storage_access(ray_head, minio, s3, tmp_path):
    """A shared Ray cluster (runtime rayJobsAPI) is never handed Secret values: the job uses the
    cluster's own access. Without any, it fails at once and says where access comes from; with the
    cluster's own keys it runs, although the Secret's key names are nowhere in its environment."""
    s3.create_bucket(Bucket="own-access")
    ref = {"name": "registry-credentials", "accessKeyIdKey": "REG_KEY", "secretAccessKeyKey": "REG_SECRET"}
    conn = {"endpoint": minio["endpoint"], "region": "us-east-1", "credentialsSecretRef": ref}
    spec = {
        "model": {"architecture": ARCH},
        "data": {
            "sources": [{"uri": "s3://own-access/none/"}],
            "s3": conn,
            "preparation": {"tokenization": {"blockSize": 64}},
        },
        "method": {"type": "pretrain", "hyperparameters": {"maxSteps": 2}},
        "output": {"registry": {"s3": {"bucket": "own-access", **conn}}, "modelName": "own-access"},
    }
    run = make_run(spec, "own-access")
    assert run.spec.runtime.type == "rayJobsAPI"

    log = tmp_path / "no-access.log"
    proc = start(run, ray_head, log, env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert proc.wait(300) == 2, log.read_text()[-3000:]
    text = log.read_text()
    assert "spec.output.registry: the job cannot read s3://own-access" in text, text[-3000:]
    assert "the shared Ray cluster uses its own storage access" in text
    assert "Secret registry-credentials serves the operator only" in text

    work = open_store(run.work_dir, Credentials(minio["access_key"], minio["secret_key"]))
    env = {"AWS_ACCESS_KEY_ID": minio["access_key"], "AWS_SECRET_ACCESS_KEY": minio["secret_key"]}
    outcome = run_workload(run, ray_head, tmp_path / "own-access.log", work, env, timeout=300)
    # Past the access check and into ingest: the data prefix is empty, which it says.
    assert outcome.rc == 2 and "no jsonl file there" in outcome.report.message, outcome.report.message
