"""bench/reconcile_scale.py's polls: a poll the loaded apiserver fails (5xx, no answer) keeps the
last count and the wait goes on; any other error still ends the bench."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from kubernetes import client

from llmops.operators.kube import ApiError, NotFound, Unreachable

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def scale(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("reconcile_scale", None)
    import reconcile_scale

    return reconcile_scale


def _raising(error: Exception):
    def check() -> int:
        raise error

    return check


@pytest.mark.parametrize(
    "error",
    [
        client.ApiException(status=504, reason="Gateway Timeout"),
        client.ApiException(status=503, reason="Service Unavailable"),
        ApiError(500, "InternalError", "etcdserver: request timed out"),
        Unreachable(None, "ConnectError", "connection refused"),
    ],
)
def test_a_failed_poll_keeps_the_last_count(scale, error) -> None:
    assert scale.polled(_raising(error), 7) == 7
    assert scale.polled(lambda: 9, 7) == 9


@pytest.mark.parametrize(
    "error",
    [client.ApiException(status=403, reason="Forbidden"), NotFound(404, "NotFound", "gone")],
)
def test_other_errors_end_the_bench(scale, error) -> None:
    with pytest.raises(type(error)):
        scale.polled(_raising(error), 7)


def test_wait_rides_over_a_failed_poll(scale, monkeypatch) -> None:
    monkeypatch.setattr(scale.time, "sleep", lambda _: None)
    answers = iter([3, client.ApiException(status=504), 5])

    def check() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    scale.wait("objects", check, target=5, timeout=60)
