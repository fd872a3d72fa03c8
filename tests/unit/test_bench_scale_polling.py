"""bench/reconcile_scale.py's polls: a poll the loaded apiserver fails (5xx, 429, an expired continue
token, no answer) keeps the last count and the wait goes on; any other error still ends the bench;
the ModelDeployments are read in pages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import urllib3
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
        client.ApiException(status=429, reason="Too Many Requests"),
        client.ApiException(status=410, reason="Expired"),
        urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused"),
        urllib3.exceptions.ReadTimeoutError(None, "/apis", "read timed out"),
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


def test_wait_rides_over_a_failed_poll(scale, monkeypatch, capsys) -> None:
    monkeypatch.setattr(scale.time, "sleep", lambda _: None)
    answers = [3, client.ApiException(status=504), 5]

    def check() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    scale.wait("objects", check, target=5, timeout=60)
    assert answers == []
    assert "a poll failed (504); polling again" in capsys.readouterr().err


def test_ready_objects_reads_every_page(scale) -> None:
    """Pages of LIST_PAGE, each asked with the previous page's continue token, until one has none;
    an object counts when its Ready condition is True at its generation."""

    def md(generation: int, observed: int | None, ready: str = "True") -> dict:
        condition = {"type": "Ready", "status": ready, "observedGeneration": observed}
        return {"metadata": {"generation": generation}, "status": {"conditions": [condition]}}

    pages = {
        None: ([md(1, 1), md(2, 1)], "after-2"),
        "after-2": ([md(1, 1, "False"), {"metadata": {"generation": 1}}], "after-4"),
        "after-4": ([md(3, 3)], None),
    }
    asked = []

    class Api:
        def list_namespaced_custom_object(self, group, version, namespace, plural, **kwargs):
            asked.append((namespace, kwargs["limit"], kwargs["_continue"]))
            items, token = pages[kwargs["_continue"]]
            return {"items": items, "metadata": {"continue": token} if token else {}}

    assert scale.ready_objects(Api(), "operator") == 2
    limit = scale.LIST_PAGE
    assert asked == [
        ("operator", limit, None),
        ("operator", limit, "after-2"),
        ("operator", limit, "after-4"),
    ]
