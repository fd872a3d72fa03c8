"""The drift monitor (llmops/operators/modeldeployment/drift.py)."""

from __future__ import annotations

from llmops.api.common import ObjectStorageLocation
from llmops.gateway_config import GatewayConfig
from tests.unit.operators.modeldeployment.cases import (
    objects,
    pod_labels,
)


def test_drift_monitor_runs_with_each_locations_own_credentials() -> None:
    objs = objects("canary")  # the example with spec.monitoring.drift
    pod = objs[("Deployment", "support-bot-canary-drift")]["spec"]["template"]["spec"]
    (drift,) = pod["containers"]
    argv = drift["command"]
    assert argv[:3] == ["python", "-m", "llmops.serving.drift"]
    reference = ObjectStorageLocation.model_validate_json(argv[argv.index("--reference") + 1])
    samples = ObjectStorageLocation.model_validate_json(argv[argv.index("--samples") + 1])
    assert reference.s3 and reference.s3.prefix == "support/reference/"
    config = GatewayConfig.model_validate_json(
        objs[("ConfigMap", "support-bot-canary-gateway")]["data"]["config.json"]
    )
    assert config.drift_sampling and samples == config.drift_sampling.destination  # where the gateway writes
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in drift["env"] if "valueFrom" in e}
    assert secrets["REFERENCE_AWS_ACCESS_KEY_ID"] == "dataset-credentials"
    assert secrets["SAMPLES_AWS_ACCESS_KEY_ID"] == "payload-credentials"  # beside the payload samples
    assert all("value" not in e or "KEY" not in e["name"] for e in drift["env"])  # no secret values
    policy = objs[("NetworkPolicy", "support-bot-canary-drift")]["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9100}]
    monitor = objs[("PodMonitor", "support-bot-canary-drift")]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels(objs, "support-bot-canary-drift").items()
    assert monitor["podMetricsEndpoints"][0]["port"] == drift["ports"][0]["name"]
    assert not any(name.endswith("-drift") for _, name in objects("single"))  # drift off: no monitor
