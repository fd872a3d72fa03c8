"""MinHash signatures and LSH near-duplicate removal."""

from __future__ import annotations

from llmops.training import dedup

PERMS = dedup.permutations()


def test_signature_estimate_tracks_jaccard():
    a = "the quick brown fox jumps over the lazy dog near the river bank today"
    b = "the quick brown fox jumps over the lazy cat near the river bank today"
    c = "completely different words about weather and trains in the mountains"
    sa, sb, sc = (dedup.signature(t, PERMS) for t in (a, b, c))
    true_ab = dedup.jaccard(dedup.shingles(a), dedup.shingles(b))
    assert abs(dedup.estimate(sa, sb) - true_ab) < 0.15
    assert dedup.estimate(sa, sc) < 0.1
    assert dedup.estimate(sa, dedup.signature(a, PERMS)) == 1.0


def test_shingles_fold_case_and_spacing():
    assert dedup.shingles("Hello   World") == dedup.shingles("hello world")
    assert len(dedup.shingles("abc")) == 1


def test_lsh_params_fit_the_threshold():
    for threshold in (0.5, 0.7, 0.85, 0.95):
        bands, rows = dedup.lsh_params(threshold, 128)
        assert bands * rows <= 128
        # the S-curve's midpoint (1/b)^(1/r) sits near the threshold
        assert abs((1 / bands) ** (1 / rows) - threshold) < 0.15
    low, high = dedup.lsh_params(0.5, 128), dedup.lsh_params(0.95, 128)
    assert low[1] < high[1]  # higher thresholds need longer bands


def test_near_duplicates_keep_the_first_of_each_group():
    docs = [
        "The harbour master counted twelve boats in the morning fog.",
        "Bakers in Alder start their ovens long before the sun comes up.",
        "The harbour master counted twelve boats in the morning fog!",
        "the HARBOUR master counted twelve boats in the morning fog.",
        "Bakers in Alder start their ovens long before the sun comes up!!",
        "A completely unrelated sentence about railway timetables.",
    ]
    sigs = [dedup.signature(d, PERMS) for d in docs]
    assert dedup.near_duplicates(sigs, 0.8) == {2, 3, 4}
    assert dedup.near_duplicates(sigs, 0.999) == {3}  # only the case-folded copy is identical
    assert dedup.near_duplicates(sigs[:1], 0.8) == set()


def test_candidate_pairs_share_a_band():
    sigs = [[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 3, 4], [5, 6, 7, 8]]
    assert dedup.candidate_pairs(sigs, bands=2, rows=2) == {(0, 1), (0, 2)}
