"""The plan's types and decisions, and the operator's serving settings
(llmops/operators/modeldeployment/plan.py)."""

from __future__ import annotations

import datetime as dt

from llmops.api.modeldeployment import ModelDeploymentStatus
from llmops.operators.modeldeployment.plan import (
    ServedVersion,
    ServingSettings,
    drain_left,
    drain_wait,
    retiring_version,
)


def test_settings_from_env() -> None:
    s = ServingSettings.from_env(
        {
            "LLMOPS_SERVING_IMAGE": "registry.local/serving:1",
            "LLMOPS_PROMETHEUS_URL": "http://prom:9090",
            "LLMOPS_PROMETHEUS_NAMESPACE_SELECTOR": "team=obs,kubernetes.io/metadata.name=prom",
            "LLMOPS_RESYNC_SECONDS": "60",
            "LLMOPS_ALIAS_POLL_SECONDS": "5",
            "LLMOPS_SUSPEND_DRAIN_SECONDS": "120",
        }
    )
    assert s.suspend_drain_seconds == 120
    assert s.serving_image == "registry.local/serving:1" and s.prometheus_url == "http://prom:9090"
    assert dict(s.prometheus_namespace_labels) == {"team": "obs", "kubernetes.io/metadata.name": "prom"}
    assert s.resync_seconds == 60 and s.alias_poll_seconds == 5
    assert ServingSettings.from_env({}) == ServingSettings()


def test_the_retiring_version_is_the_last_one_that_served_with_ready_replicas() -> None:
    new = ServedVersion("bot", "4", "stable", 100, "md-4-vllm")
    cand = ServedVersion("bot", "5", "canary", 0, "md-5-vllm")

    def status(*versions: tuple[str, str, int]) -> ModelDeploymentStatus:
        return ModelDeploymentStatus.model_validate(
            {
                "versions": [
                    {"name": "bot", "version": v, "role": role, "weight": 0, "replicas": 1,
                     "readyReplicas": ready, "deployment": f"md-{v}-vllm"}
                    for v, role, ready in versions
                ]
            }
        )  # fmt: skip

    old = retiring_version(status(("3", "stable", 1)), new, None)
    assert old == ServedVersion("bot", "3", "previous", 0, "md-3-vllm")
    # A replacement of a replacement: the one still serving (previous) is kept, not the unready stable.
    assert retiring_version(status(("4", "stable", 0), ("2", "previous", 1)), cand, None) == ServedVersion(
        "bot", "2", "previous", 0, "md-2-vllm"
    )
    assert retiring_version(status(("3", "stable", 0)), new, None) is None  # never served: nothing to keep
    assert retiring_version(status(("4", "stable", 1)), new, None) is None  # the same version
    assert retiring_version(status(("5", "stable", 1)), new, cand) is None  # the canary itself
    assert retiring_version(ModelDeploymentStatus(), new, None) is None


def test_a_suspended_deployments_servers_wait_for_the_gateway_to_drain() -> None:
    """plan.drain_wait: the model servers go to 0 once every gateway pod has taken the suspend and no
    request is at a replica, or at the time limit; they never wait once at 0."""
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    now = t0 + dt.timedelta(seconds=30)

    def wait(**kw: object) -> str | None:
        facts = {"since": t0, "now": now, "limit": 600, "at_zero": False, "gateway_suspended": 1.0}
        return drain_wait(**{**facts, "inflight": 0.0, **kw})  # type: ignore[arg-type]

    assert wait() is None
    assert wait(inflight=None) is None  # no request ever reached a replica: no series
    assert wait(inflight=2.0) == (
        "2 request(s) in flight at the gateway; the model servers go to 0 when it is done, or at"
        " 2026-01-01T00:10:00+00:00 at the latest"
    )
    assert wait(gateway_suspended=0.0).startswith("a gateway pod has not taken the suspend yet")
    assert wait(gateway_suspended=None).startswith(
        "the gateway's llmops_gateway_suspended is not in Prometheus"
    )
    assert wait(gateway_suspended=None, since=None).endswith("at 2026-01-01T00:10:30+00:00 at the latest")
    assert wait(gateway_suspended=None, now=t0 + dt.timedelta(seconds=600)) is None  # the limit
    assert wait(gateway_suspended=None, limit=0) is None
    assert wait(gateway_suspended=None, inflight=3.0, at_zero=True) is None  # never back up
    # While they wait, the time left of the limit: the clock beside the reconcile's paced poll.
    assert drain_left(since=t0, now=now, limit=600) == 570.0
    assert drain_left(since=None, now=now, limit=600) == 600.0  # the suspend's first reconcile
    assert drain_left(since=t0, now=t0 + dt.timedelta(seconds=900), limit=600) == 0.0
