"""Token buckets and the per-key limiter (serving.ratelimit)."""

from __future__ import annotations

import pytest

from llmops.api.modeldeployment import RateLimit
from llmops.serving.ratelimit import KeyLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == pytest.approx(0.5)  # one more needs half a second at 2/s
    clock.now += 0.5
    assert bucket.take() == 0
    clock.now += 100
    assert [bucket.take() for _ in range(4)][-1] > 0  # never above capacity


def test_key_limiter_requests_burst_and_per_key():
    clock = FakeClock()
    limiter = KeyLimiter(RateLimit(requests_per_minute=60, burst=2), clock)
    assert limiter.admit("a").allowed and limiter.admit("a").allowed
    refused = limiter.admit("a")
    assert not refused.allowed and refused.reason == "requests_per_minute"
    assert refused.retry_after == pytest.approx(1.0) and refused.retry_after_header == "1"
    assert limiter.admit("b").allowed  # keys do not share buckets
    clock.now += 1
    assert limiter.admit("a").allowed


def test_key_limiter_tokens_charged_after_the_fact():
    clock = FakeClock()
    limiter = KeyLimiter(RateLimit(tokens_per_minute=600), clock)  # 10 tokens/s
    assert limiter.admit("k").allowed
    limiter.charge_tokens("k", 650)  # a big request drives the bucket to -50
    refused = limiter.admit("k")
    assert not refused.allowed and refused.reason == "tokens_per_minute"
    assert refused.retry_after == pytest.approx(5.0, abs=0.01)
    assert refused.retry_after_header == "5"
    clock.now += 5.01
    assert limiter.admit("k").allowed


def test_no_limit_admits_everything():
    limiter = KeyLimiter(None)
    assert all(limiter.admit("x").allowed for _ in range(1000))
