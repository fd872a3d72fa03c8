"""Text clean-up, quality filters, augmentation and packing of the prepare stage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmops.training import text


def test_normalize_folds_unicode_whitespace_and_controls():
    raw = "  \uff26\uff55\uff4c\uff4c\u00a0width\t text\u200b here \r\n\r\n\r\n\nnext\x07 line  "
    assert text.normalize(raw) == "Full width text here\n\nnext line"


def test_normalize_is_idempotent():
    once = text.normalize("A\u2028B  \n\n\n\nC\ufb01")
    assert text.normalize(once) == once
    assert "fi" in once  # NFKC expands the ligature


def test_quality_problems():
    assert text.quality_problem("   ", None, None) == "empty"
    assert text.quality_problem("ok", 3, None) == "too_short"
    assert text.quality_problem("long enough", None, 5) == "too_long"
    assert text.quality_problem("!!!! ---- ####", None, None) == "low_quality"
    assert text.quality_problem("A normal sentence.", 3, 100) is None


def test_content_hash_ignores_case_and_spacing_only():
    assert text.content_hash("The  Cat sat") == text.content_hash("the cat   sat")
    assert text.content_hash("the cat sat") != text.content_hash("the cat sat!")


def test_split_bucket_is_stable_and_uniform_enough():
    values = [text.split_bucket(f"document {i}") for i in range(2000)]
    assert values == [text.split_bucket(f"document {i}") for i in range(2000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.07 < sum(v < 0.1 for v in values) / len(values) < 0.13


def test_augmentations_are_deterministic_and_change_words():
    doc = "one two three four five six seven eight nine ten\nsecond line here"
    for kind in text.AUGMENTERS:
        a = text.augment(doc, kind, 0.3, 0, seed=1)
        assert a == text.augment(doc, kind, 0.3, 0, seed=1)
        assert a != doc
        assert a.count("\n") == 1  # line structure survives
    assert text.augment(doc, "randomSwap", 0.3, 0, 1) != text.augment(doc, "randomSwap", 0.3, 1, 1)
    deleted = text.augment(doc, "randomDeletion", 0.3, 0, 1).split()
    assert 0 < len(deleted) < len(doc.split())
    inserted = text.augment(doc, "randomInsertion", 0.3, 0, 1).split()
    assert len(inserted) > len(doc.split()) and set(inserted) <= set(doc.split())
    swapped = text.augment(doc, "randomSwap", 0.3, 0, 1)
    assert sorted(swapped.split()) == sorted(doc.split())


def test_deletion_keeps_at_least_one_word():
    import random

    assert len(text.random_deletion(["a", "b"], 1.0, random.Random(0))) == 1


@given(
    st.lists(st.lists(st.integers(0, 1000), max_size=40), max_size=30),
    st.integers(1, 64),
)
def test_packing_keeps_every_token_in_order(docs, block):
    blocks, lengths = text.pack_blocks(docs, block, pad_id=-1)
    assert all(len(b) == block for b in blocks)
    assert all(0 < n <= block for n in lengths)
    assert all(n == block for n in lengths[:-1])
    flat = [t for b, n in zip(blocks, lengths, strict=True) for t in b[:n]]
    assert flat == [t for d in docs for t in d]
    assert all(t == -1 for b, n in zip(blocks, lengths, strict=True) for t in b[n:])
