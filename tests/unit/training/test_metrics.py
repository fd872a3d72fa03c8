"""Task metrics: exact match, accuracy, F1, ROUGE-L, BLEU."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmops.training import metrics


def test_exact_match_normalises():
    assert metrics.exact_match("The Answer!", "answer") == 1.0
    assert metrics.exact_match("an answer", "the answers") == 0.0


def test_accuracy_is_answer_first():
    assert metrics.score("accuracy", ["Yes, support is open.", "No."], ["yes", "yes"]) == 0.5


def test_f1_partial_overlap():
    assert metrics.f1("cat sat on mat", "the cat sat") == pytest.approx(
        2 * (2 / 4) * (2 / 2) / (2 / 4 + 2 / 2)
    )


def test_rouge_l_uses_the_longest_common_subsequence():
    assert metrics.lcs_length(["a", "b", "c", "d", "e"], ["a", "x", "c", "y", "e"]) == 3
    pred, ref = "police killed the gunman", "police kill the gunman"
    assert metrics.rouge_l(pred, ref) == pytest.approx(2 / 3)  # lcs "police gunman" (articles dropped)
    assert metrics.rouge_l("same words here", "same words here") == 1.0
    assert metrics.rouge_l("", "") == 1.0 and metrics.rouge_l("x", "") == 0.0


def test_bleu():
    refs = ["the cat is on the mat today", "there is a cat on the mat"]
    assert metrics.bleu(refs, refs) == pytest.approx(1.0)
    assert 0 < metrics.bleu(["the cat is on a mat", "a cat on the mat"], refs) < 1
    assert metrics.bleu(["zzz"], ["the cat"]) == 0.0
    short = metrics.bleu(["cat mat"], ["cat mat sat on the floor"])
    assert short < metrics.bleu(["cat mat sat on floor"], ["cat mat sat on the floor"])  # brevity penalty


@given(st.text(max_size=60), st.text(max_size=60))
def test_pairwise_metrics_are_bounded(a, b):
    for fn in (metrics.exact_match, metrics.f1, metrics.rouge_l, metrics.prefix_match):
        assert 0.0 <= fn(a, b) <= 1.0
    assert metrics.rouge_l(a, a) == 1.0 and metrics.f1(a, a) == 1.0
