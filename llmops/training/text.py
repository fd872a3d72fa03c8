"""Pure text functions of the prepare stage: normalisation, quality checks, hashing, augmentation.

No heavy imports: Ray Data calls these inside `map_batches`, and unit tests call them directly.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """NFKC, line endings to \\n, no control or zero-width characters, runs of spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def quality_problem(text: str, min_length: int | None, max_length: int | None) -> str | None:
    """Why a document is dropped ("empty", "too_short", "too_long", "low_quality"), or None to keep it.

    low_quality: fewer than a quarter of the characters are letters or digits (markup debris,
    binary junk, separator lines). Deliberately conservative: it only removes what no one trains on.
    """
    if not text.strip():
        return "empty"
    if min_length is not None and len(text) < min_length:
        return "too_short"
    if max_length is not None and len(text) > max_length:
        return "too_long"
    alnum = sum(ch.isalnum() for ch in text)
    if alnum < 0.25 * len(text):
        return "low_quality"
    return None


def fold(text: str) -> str:
    """The text as duplicates are compared: NFKC, Unicode case folding (`str.casefold`, Unicode
    default case folding), NFKC again (an approximation of Unicode's NFKC_Casefold), white space
    runs as one space. Applied whatever `normalize` says, so NFC/NFD or case twins are the same key."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def content_hash(text: str) -> str:
    """Exact-duplicate key: sha256 of the folded text (`fold`)."""
    return hashlib.sha256(fold(text).encode()).hexdigest()


def split_bucket(text: str) -> float:
    """A stable number in [0, 1) per document: the validation split is `split_bucket(t) < fraction`.

    Stable across runs and workers (no shuffle state), so a resumed job gets the same split.
    """
    digest = hashlib.blake2b(text.encode(), digest_size=8, person=b"llmops-split").digest()
    return int.from_bytes(digest, "big") / 2**64


def _seeded(text: str, seed: int, kind: str, copy: int) -> random.Random:
    digest = hashlib.blake2b(f"{seed}/{kind}/{copy}/{text}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Drop each word with probability p (keep at least one)."""
    kept = [w for w in words if rng.random() >= p]
    return kept or ([rng.choice(words)] if words else [])


def random_swap(words: list[str], p: float, rng: random.Random) -> list[str]:
    """round(p * len) swaps of two random positions (at least one when there are two words)."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(max(1, round(p * len(out)))):
        i, j = rng.randrange(len(out)), rng.randrange(len(out))
        out[i], out[j] = out[j], out[i]
    return out


def random_insertion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """round(p * len) insertions (at least one) of a word of the same text at a random position.

    EDA inserts synonyms; without a thesaurus, words of the same document keep the vocabulary in domain.
    """
    out = list(words)
    if not out:
        return out
    for _ in range(max(1, round(p * len(out)))):
        out.insert(rng.randrange(len(out) + 1), rng.choice(words))
    return out


AUGMENTERS = {
    "randomDeletion": random_deletion,
    "randomSwap": random_swap,
    "randomInsertion": random_insertion,
}


def augment(text: str, kind: str, probability: float, copy: int, seed: int) -> str:
    """One augmented copy of `text`, deterministic in (text, kind, copy, seed); line breaks survive."""
    rng = _seeded(text, seed, kind, copy)
    fn = AUGMENTERS[kind]
    return "\n".join(" ".join(fn(line.split(), probability, rng)) for line in text.split("\n"))


def pack_blocks(
    documents: list[list[int]], block_size: int, pad_id: int
) -> tuple[list[list[int]], list[int]]:
    """Concatenate token sequences and cut them into blocks of `block_size`.

    Returns (blocks, lengths): every block has exactly block_size ids; the last one is padded with
    pad_id and its length says how many ids are real (the loss ignores the rest). No token is lost.
    """
    stream = [t for doc in documents for t in doc]
    blocks, lengths = [], []
    for start in range(0, len(stream), block_size):
        chunk = stream[start : start + block_size]
        lengths.append(len(chunk))
        blocks.append(chunk + [pad_id] * (block_size - len(chunk)))
    return blocks, lengths
