"""Knowledge distillation (TrainingJob `method.type: distill`) on a real local Ray head, end to end.

The teacher: a tiny 4-layer Llama (llmops/training/tiny.py) trained here for a few dozen steps on
the quickstart corpus, so that its next-token distribution is a real one (not a random network's,
and not yet one that has memorised the corpus), and registered as `tiny-teacher:1`. The student: a
new 2-layer `model.architecture` without a tokenizer (it reuses the teacher's). The same student
(same architecture, seed, data, steps and learning rate, on 2 Ray Train workers) is trained twice
by the workload: once `distill` from the teacher, once plain `pretrain` on the teacher's tokenizer.
On held-out text (the quickstart's evaluation questions and answers, not trained on), the test loads
the two registered students and the teacher with transformers and measures the mean
KL(teacher || student) of their next-token distributions: the distilled student must be closer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmops import registry
from llmops.api.common import ModelReference, ObjectStorageLocation
from llmops.storage import open_store
from tests.workloads.support import ARCH, DATA, QUICKSTART, json_of, make_run, run_workload

TEACHER = {"layers": 4}  # otherwise tiny.py's defaults: hidden 128, 2 heads, vocabulary 512
TEACHER_STEPS = 40
STUDENT_STEPS = 40
HYPERPARAMETERS = {"maxSteps": STUDENT_STEPS, "learningRate": 3e-3, "batchSize": 8, "seed": 7}


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def _held_out() -> list[str]:
    rows = [json.loads(line) for line in (QUICKSTART / "eval.jsonl").read_text().splitlines() if line.strip()]
    return [f"{r['prompt']} {r['reference']}" for r in rows]


def _train_teacher(folder: Path, texts: list[str], steps: int) -> dict[str, float]:
    """A few dozen AdamW steps of next-token training on `texts` (blocks of 64 tokens); returns the
    first and last loss. Plain torch: the teacher is this test's input, not what it tests."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from llmops.training.text import pack_blocks

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = LlamaForCausalLM.from_pretrained(folder)
    encoded = [[tokenizer.bos_token_id, *tokenizer.encode(t), tokenizer.eos_token_id] for t in texts]
    blocks, _ = pack_blocks(encoded, 64, tokenizer.pad_token_id)
    data = torch.tensor(blocks[:-1])  # the last block is padded: left out
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(steps):
        batch = data[torch.randint(0, len(data), (16,))]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step in (0, steps - 1):
            losses.append(loss.item())
    model.save_pretrained(folder, safe_serialization=True)
    return {"first": losses[0], "last": losses[-1]}


def mean_kl(teacher_dir: Path, student_dir: Path, texts: list[str]) -> float:
    """Mean over every next-token position of `texts` of KL(p_teacher || p_student), in nats (T = 1)."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    total = count = 0.0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer.encode(text)]])
            p = F.log_softmax(teacher(input_ids=ids).logits[0].float(), -1)
            q = F.log_softmax(student(input_ids=ids).logits[0].float(), -1)
            total += float((p.exp() * (p - q)).sum())
            count += ids.shape[1]
    return total / count


def _spec(method: dict[str, Any], model: dict[str, Any], reg: dict[str, Any], name: str, **extra) -> dict:
    return {
        "model": model,
        "data": {
            "sources": [{"uri": str(QUICKSTART / "train.jsonl")}],
            "preparation": {"tokenization": {"blockSize": 64}, "validationSplit": 0.1},
        },
        "method": method,
        "output": {"registry": reg, "modelName": name},
        "resources": {"workers": 2},  # the teacher sits beside the student on each worker
        **extra,
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> dict[str, Any]:
    """`tiny-teacher:1` in a local registry: 4 layers, trained a little on the quickstart corpus."""
    from llmops.training.tiny import corpus, make_tiny_llama

    root = tmp_path_factory.mktemp("distill")
    folder = make_tiny_llama(
        corpus([QUICKSTART / "train.jsonl", DATA / "corpus.txt"]), root / "teacher", **TEACHER
    )
    losses = _train_teacher(folder, _texts(QUICKSTART / "train.jsonl"), TEACHER_STEPS)
    print(f"teacher: 4 layers, loss {losses['first']:.3f} -> {losses['last']:.3f} in {TEACHER_STEPS} steps")
    assert losses["last"] < 0.8 * losses["first"], losses
    reg = {"local": {"path": str(root / "registry")}}
    store = open_store(ObjectStorageLocation.model_validate(reg))
    registry.register(store, "tiny-teacher", folder, metrics={}, gates=[], lineage=registry.Lineage())
    return {"root": root, "registry": reg, "store": store}


@pytest.fixture(scope="module")
def students(ray_head, teacher) -> dict[str, Any]:
    """The same 2-layer student trained twice by the workload: distilled from the teacher, and plain."""
    student = {k: v for k, v in ARCH.items()}  # 2 layers, hidden 128, no tokenizer: the teacher's
    teacher_model = teacher["root"] / "registry/models/tiny-teacher/versions/1/model"
    distill = _spec(
        {
            "type": "distill",
            "distillation": {
                "teacher": {"name": "tiny-teacher", "version": "1"},
                "temperature": 2.0,
                "alpha": 0.5,
            },
            "hyperparameters": HYPERPARAMETERS,
        },
        {"architecture": student},
        teacher["registry"],
        "tiny-distilled",
        evaluation={
            "gates": [{"metric": "perplexity", "compare": "ratio", "operator": "<=", "threshold": 100}]
        },
    )
    plain = _spec(
        {"type": "pretrain", "hyperparameters": HYPERPARAMETERS},
        {"architecture": {**student, "tokenizer": str(teacher_model)}},
        teacher["registry"],
        "tiny-plain",
    )
    out = {}
    for name, spec in (("distilled", distill), ("plain", plain)):
        run = make_run(spec, name)
        work = open_store(run.work_dir)
        out[name] = {
            "run": run,
            "work": work,
            "outcome": run_workload(run, ray_head, teacher["root"] / f"{name}.log", work),
        }
    return out


def test_distilled_student_is_closer_to_the_teacher(teacher, students, tmp_path):
    for name, s in students.items():
        outcome = s["outcome"]
        assert outcome.rc == 0 and outcome.report.phase == "Succeeded", (
            f"{name}: {outcome.report.message}\n{outcome.log[-4000:]}"
        )
    store = teacher["store"]
    folders = {
        name: registry.download(
            store, registry.resolve(store, ModelReference(name=model, version="1")), tmp_path / name
        )
        for name, model in (
            ("teacher", "tiny-teacher"),
            ("distilled", "tiny-distilled"),
            ("plain", "tiny-plain"),
        )
    }
    held_out = _held_out()
    kl = {name: mean_kl(folders["teacher"], folders[name], held_out) for name in ("distilled", "plain")}
    print(
        f"mean KL(teacher || student) over held-out next tokens after {STUDENT_STEPS} steps: "
        f"distilled {kl['distilled']:.4f} nats, plain {kl['plain']:.4f} nats "
        f"(ratio {kl['distilled'] / kl['plain']:.3f})"
    )
    assert kl["distilled"] < kl["plain"], kl


def test_distill_run_reports_both_terms_and_records_the_teacher(teacher, students):
    outcome = students["distilled"]["outcome"]
    assert outcome.rc == 0, outcome.log[-4000:]
    metrics = outcome.report.metrics
    assert {"train/kl", "train/ce", "train/loss"} <= set(metrics), metrics
    assert metrics["train/loss"] == pytest.approx(
        0.5 * 4 * metrics["train/kl"] + 0.5 * metrics["train/ce"], rel=1e-3
    )  # alpha * T^2 * KL + (1 - alpha) * CE, averaged over the same window
    result = json_of(students["distilled"]["work"], "train/result.json")
    assert result["workers"] == 2 and result["steps"] == STUDENT_STEPS
    first, last = result["history"][0], result["history"][-1]
    assert last["kl"] < first["kl"], result["history"]
    print(f"distill: KL {first['kl']:.4f} -> {last['kl']:.4f}, CE {first['ce']:.4f} -> {last['ce']:.4f}")
    prepared = json_of(students["distilled"]["work"], "stages/prepare.json")
    assert prepared["tokenizer"] == "distillation teacher tiny-teacher:1"
    manifest = registry.resolve(teacher["store"], ModelReference(name="tiny-distilled", version="1"))
    assert manifest.lineage.method == "distill"
    assert manifest.lineage.hyperparameters["distillation"] == {
        "teacher": {"name": "tiny-teacher", "version": "1"},
        "temperature": 2.0,
        "alpha": 0.5,
    }
    # The teacher is the baseline when evaluation.baseline is omitted: scored in the same run.
    baseline = outcome.report.baseline
    assert baseline is not None and (baseline.name, baseline.version) == ("tiny-teacher", "1")
    ratio = next(g for g in outcome.report.gates if g.metric == "perplexity")
    assert (
        ratio.passed and ratio.compare == "ratio" and ratio.baseline_value == baseline.metrics["perplexity"]
    )
    print(
        f"perplexity: student {metrics['perplexity']:.2f}, teacher {baseline.metrics['perplexity']:.2f}, "
        f"ratio {ratio.compared:.3f}"
    )


@pytest.mark.parametrize("case", ["other-tokenizer", "teacher-missing"])
def test_a_teacher_that_cannot_teach_is_refused_before_any_data_moves(ray_head, teacher, tmp_path, case):
    from llmops.training.tiny import corpus, make_tiny_llama

    ref = {"name": "tiny-teacher", "version": "1"}
    if case == "other-tokenizer":  # a student base whose BPE has another vocabulary
        other = make_tiny_llama(corpus([QUICKSTART / "train.jsonl"]), tmp_path / "other", vocab_size=384)
        expected = f"teacher tiny-teacher:1 and the student {other} do not share a tokenizer"
        model = {"baseModel": str(other)}
    else:
        ref = {"name": "never-registered", "version": "2"}
        expected = "spec.method.distillation.teacher: model 'never-registered' has no version '2'"
        model = {"architecture": ARCH}
    spec = _spec(
        {"type": "distill", "distillation": {"teacher": ref}}, model, teacher["registry"], "tiny-refused"
    )
    run = make_run(spec, case)
    work = open_store(run.work_dir)
    outcome = run_workload(run, ray_head, tmp_path / "workload.log", work, timeout=300)
    message = outcome.report.message
    print(message)
    assert outcome.rc == 2 and outcome.report.phase == "Failed", outcome.log[-3000:]
    assert expected in message and message.startswith("spec.method.distillation.teacher"), message
    assert "Traceback" not in message and not work.exists("stages/ingest.json")
