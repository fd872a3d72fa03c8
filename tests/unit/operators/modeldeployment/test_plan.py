"""The operator's serving settings (operators/modeldeployment/plan.py)."""

from __future__ import annotations

from operators.modeldeployment.plan import ServingSettings


def test_settings_from_env() -> None:
    s = ServingSettings.from_env(
        {
            "LLMOPS_SERVING_IMAGE": "registry.local/serving:1",
            "LLMOPS_PROMETHEUS_URL": "http://prom:9090",
            "LLMOPS_PROMETHEUS_NAMESPACE_SELECTOR": "team=obs,kubernetes.io/metadata.name=prom",
            "LLMOPS_RESYNC_SECONDS": "60",
        }
    )
    assert s.serving_image == "registry.local/serving:1" and s.prometheus_url == "http://prom:9090"
    assert dict(s.prometheus_namespace_labels) == {"team": "obs", "kubernetes.io/metadata.name": "prom"}
    assert s.resync_seconds == 60
    assert ServingSettings.from_env({}) == ServingSettings()
