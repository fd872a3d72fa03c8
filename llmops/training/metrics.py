"""Task metrics over (prediction, reference) pairs. Pure functions, all in [0, 1].

- exact_match: normalised prediction equals normalised reference (SQuAD normalisation: lower case,
  no punctuation, no articles, single spaces).
- accuracy: for multiple-choice rows, the choice the model scores highest is the reference; for
  free-form rows, the normalised prediction starts with the normalised reference (the answer comes
  first, whatever the model adds after it).
- f1: token-overlap F1 (SQuAD).
- rouge_l: F-measure of the longest common subsequence of tokens (ROUGE-L, beta = 1).
- bleu: corpus BLEU-4 with add-one smoothing of the higher n-gram precisions and the brevity penalty.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def prefix_match(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    return float(bool(ref) and pred[: len(ref)] == ref)


def f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu(predictions: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU: clipped n-gram precisions pooled over the corpus, geometric mean, brevity penalty."""
    matches, totals = [0] * max_n, [0] * max_n
    pred_len = ref_len = 0
    for prediction, reference in zip(predictions, references, strict=True):
        pred, ref = tokens(prediction), tokens(reference)
        pred_len, ref_len = pred_len + len(pred), ref_len + len(ref)
        for n in range(1, max_n + 1):
            p, r = _ngrams(pred, n), _ngrams(ref, n)
            matches[n - 1] += sum((p & r).values())
            totals[n - 1] += sum(p.values())
    if pred_len == 0 or matches[0] == 0:
        return 0.0
    log_precision = 0.0
    for n in range(max_n):
        num, den = (matches[n], totals[n]) if n == 0 else (matches[n] + 1, totals[n] + 1)
        log_precision += math.log(num / den) / max_n
    penalty = 1.0 if pred_len > ref_len else math.exp(1 - ref_len / pred_len)
    return penalty * math.exp(log_precision)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


PAIRWISE = {"exact_match": exact_match, "f1": f1, "rouge_l": rouge_l}


def score(metric: str, predictions: Sequence[str], references: Sequence[str]) -> float:
    """One of exact_match, f1, rouge_l, bleu, or free-form accuracy, over a dataset."""
    if metric == "bleu":
        return bleu(predictions, references)
    if metric == "accuracy":
        return mean([prefix_match(p, r) for p, r in zip(predictions, references, strict=True)])
    fn = PAIRWISE[metric]
    return mean([fn(p, r) for p, r in zip(predictions, references, strict=True)])
