"""The plan's types and decisions, and the operator's serving settings
(llmops/operators/modeldeployment/plan.py)."""

from __future__ import annotations

from llmops.api.modeldeployment import ModelDeploymentStatus
from llmops.operators.modeldeployment.plan import ServedVersion, ServingSettings, retiring_version


def test_settings_from_env() -> None:
    s = ServingSettings.from_env(
        {
            "LLMOPS_SERVING_IMAGE": "registry.local/serving:1",
            "LLMOPS_PROMETHEUS_URL": "http://prom:9090",
            "LLMOPS_PROMETHEUS_NAMESPACE_SELECTOR": "team=obs,kubernetes.io/metadata.name=prom",
            "LLMOPS_RESYNC_SECONDS": "60",
            "LLMOPS_ALIAS_POLL_SECONDS": "5",
        }
    )
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
