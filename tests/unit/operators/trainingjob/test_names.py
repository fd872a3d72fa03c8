"""Names and ids of what a TrainingJob makes: valid, deterministic, one per object or generation."""

from __future__ import annotations

import re

import pytest

from llmops.operators.trainingjob import names

from .support import JOB


@pytest.mark.parametrize(
    "name", ["a", "tiny-llama-pretrain", "9lives", "team.a.experiment-42", "x" * 253, "a-" + "b." * 100]
)
def test_rayjob_name_is_a_valid_kuberay_name(name: str) -> None:
    result = names.rayjob_name(name, JOB.uid)
    assert len(result) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", result), result
    assert result == names.rayjob_name(name, JOB.uid)  # deterministic
    assert result != names.rayjob_name(name, "ffffffff-0000-0000-0000-000000000000")


def test_submission_id_is_deterministic_per_generation() -> None:
    first = names.submission_id(JOB)
    assert first == names.submission_id(JOB) == "llmops-ml-tiny-llama-pretrain-0f5c2c4e-g3"
    assert names.submission_id(JOB.model_copy(update={"generation": 4})) != first
    long = JOB.model_copy(update={"name": "n" * 253})
    assert len(names.submission_id(long)) < 128


def test_retried_and_resumed_ids() -> None:
    first = names.submission_id(JOB)
    assert names.attempt(first) == 0
    assert names.retried_submission(first) == f"{first}-retry1"
    assert names.retried_submission(f"{first}-retry1") == f"{first}-retry2"
    assert names.attempt(f"{first}-retry2") == 2
    older = names.submission_id(JOB.model_copy(update={"generation": 2}))
    assert names.resumed_submission(JOB, older) == first
    assert names.resumed_submission(JOB, first) == f"{first}-resumed"
    assert names.attempt(f"{first}-resumed") == 0
