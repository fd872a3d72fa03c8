"""Near-duplicate detection with MinHash signatures and locality-sensitive hashing (LSH). Pure functions.

A document becomes a set of character 5-grams of its folded text (NFKC, case folding, spaces); its MinHash
signature keeps, for each of `num_perm` random hash functions h(x) = (a*x + b) mod p, the minimum
over the set, so two signatures agree at a position with probability equal to the sets' Jaccard
similarity. LSH cuts a signature into `bands` of `rows` values: documents that share any whole band
become candidates, and a candidate pair is a duplicate when its estimated similarity reaches the
threshold. Duplicates are grouped (union-find) and the first document of each group is kept.

Signatures are computed in parallel (Ray Data `map_batches`); the index is built in one place
(the signatures are small: `num_perm` integers per document).
"""

from __future__ import annotations

import functools
import random
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence

from llmops.training.text import fold

MERSENNE = (1 << 61) - 1
NUM_PERM = 128
SHINGLE = 5


def shingles(text: str, k: int = SHINGLE) -> set[int]:
    """crc32 of every character k-gram of the folded text (`text.fold`; the whole text when shorter)."""
    folded = fold(text)
    if len(folded) <= k:
        return {zlib.crc32(folded.encode())}
    return {zlib.crc32(folded[i : i + k].encode()) for i in range(len(folded) - k + 1)}


def permutations(num_perm: int = NUM_PERM, seed: int = 1) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randrange(1, MERSENNE), rng.randrange(0, MERSENNE)) for _ in range(num_perm)]


def minhash(features: Iterable[int], perms: Sequence[tuple[int, int]]) -> list[int]:
    """The MinHash signature of a feature set (empty set: all positions MERSENNE)."""
    values = list(features)
    if not values:
        return [MERSENNE] * len(perms)
    return [min((a * x + b) % MERSENNE for x in values) for a, b in perms]


def signature(text: str, perms: Sequence[tuple[int, int]]) -> list[int]:
    return minhash(shingles(text), perms)


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def estimate(sig_a: Sequence[int], sig_b: Sequence[int]) -> float:
    """Estimated Jaccard similarity: the fraction of positions where the signatures agree."""
    return sum(x == y for x, y in zip(sig_a, sig_b, strict=True)) / len(sig_a)


def _integrate(f, lo: float, hi: float, steps: int = 200) -> float:
    width = (hi - lo) / steps
    return sum(f(lo + (i + 0.5) * width) for i in range(steps)) * width


@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising false positives plus false negatives.

    A pair with similarity s becomes a candidate with probability 1 - (1 - s^rows)^bands; false
    positives are the area under that curve below the threshold, false negatives the area above it.
    """
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = _integrate(lambda s, r=rows, b=bands: 1 - (1 - s**r) ** b, 0.0, threshold, 50)
            fn = _integrate(lambda s, r=rows, b=bands: (1 - s**r) ** b, threshold, 1.0, 50)
            if best is None or fp + fn < best[0]:
                best = (fp + fn, bands, rows)
    assert best is not None
    return best[1], best[2]


def candidate_pairs(signatures: Sequence[Sequence[int]], bands: int, rows: int) -> set[tuple[int, int]]:
    """Index pairs (i < j) that share at least one whole band."""
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, sig in enumerate(signatures):
            buckets[tuple(sig[band * rows : (band + 1) * rows])].append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


def near_duplicates(signatures: Sequence[Sequence[int]], threshold: float) -> set[int]:
    """Indices to drop: every member of a near-duplicate group except its first (lowest index)."""
    if len(signatures) < 2:
        return set()
    bands, rows = lsh_params(threshold, len(signatures[0]))
    parent = list(range(len(signatures)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in candidate_pairs(signatures, bands, rows):
        if estimate(signatures[i], signatures[j]) >= threshold:
            ri, rj = root(i), root(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return {i for i in range(len(signatures)) if root(i) != i}
