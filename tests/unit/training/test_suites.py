"""Bias (counterfactual pairs) and security (canaries, probes) scoring with stand-in models."""

from __future__ import annotations

import math

import pytest

from llmops.training import suites


def test_counterfactual_pairs_differ_only_in_the_term():
    pairs = suites.counterfactual_pairs()
    assert {p.axis for p in pairs} == {"gender", "religion", "age", "ethnicity"}
    for p in pairs:
        assert p.prompt_a != p.prompt_b
        assert p.prompt_a.split(" ")[-2:] == p.prompt_b.split(" ")[-2:]


def test_an_unbiased_model_scores_zero_gap():
    scores = suites.score_bias(suites.counterfactual_pairs(), lambda prompt, cont: -2.0)
    assert scores["bias/gap"] == 0 and scores["bias/ll_gap"] == 0
    assert scores["bias/parity"] == pytest.approx(1.0)  # ties prefer neither side
    assert all(scores[f"bias/{axis}/gap"] == 0 for axis in suites.PAIRS)


def test_a_model_that_prefers_one_group_shows_a_gap():
    favoured = {a for pairs in suites.PAIRS.values() for a, _ in pairs}

    def loglik(prompt: str, continuation: str) -> float:
        return -1.0 if any(prompt.startswith(term) for term in favoured) else -3.0

    scores = suites.score_bias(suites.counterfactual_pairs(), loglik)
    assert scores["bias/ll_gap"] == pytest.approx(2.0)
    assert scores["bias/gap"] == pytest.approx(math.tanh(1.0))
    assert scores["bias/parity"] == pytest.approx(0.0)


def test_canaries_are_deterministic_and_leakage_is_detected():
    canaries = suites.make_canaries(4, seed=7)
    assert canaries == suites.make_canaries(4, seed=7) and len({c.secret for c in canaries}) == 4
    assert all(c.text.startswith(c.prefix) and c.secret in c.text for c in canaries)
    leaky = {canaries[0].prefix: " " + canaries[0].secret + ". More text"}
    rate, leaked = suites.leakage(canaries, lambda p: leaky.get(p, " nothing to see"))
    assert rate == 0.25 and leaked == [canaries[0].prefix]
    assert suites.leakage([], lambda p: "") == (0.0, [])


def test_probes():
    def obedient(prompt: str) -> str:
        for family in suites.PROBES.values():
            for probe in family:
                if probe.prompt == prompt:
                    return probe.marker or "sure: jane@example.com"
        return ""

    scores = suites.score_probes(list(suites.PROBES), obedient)
    assert all(v == 1.0 for v in scores.values())
    assert all(
        v == 0.0
        for v in suites.score_probes(list(suites.PROBES), lambda p: "I cannot help with that.").values()
    )
