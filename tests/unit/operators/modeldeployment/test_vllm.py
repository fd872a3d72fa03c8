"""The model servers (llmops/operators/modeldeployment/vllm.py)."""

from __future__ import annotations

from tests.unit.operators.modeldeployment.cases import (
    objects,
)


def test_vllm_deployment() -> None:
    objs = objects("single")
    d = objs[("Deployment", "support-bot-3-vllm")]
    pod = d["spec"]["template"]["spec"]
    vllm, fetcher = pod["containers"][0], pod["initContainers"][0]
    assert vllm["command"][:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert (
        vllm["resources"]["limits"]["nvidia.com/gpu"] == 1 == vllm["resources"]["requests"]["nvidia.com/gpu"]
    )
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {p: vllm[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {
        "startupProbe": "/health",
        "readinessProbe": "/health",
        "livenessProbe": "/health",
    }
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 65532  # images'
    assert vllm["lifecycle"]["preStop"]["sleep"]["seconds"] > 5  # past the gateways' next DNS refresh
    for c in (vllm, fetcher):
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"][
            "drop"
        ] == ["ALL"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert d["spec"]["replicas"] == 1  # min == max: no autoscaler, a fixed count
    # The fetcher downloads exactly the resolved version; credentials only by reference.
    assert (
        fetcher["command"][:3] == ["python", "-m", "llmops.fetch"]
        and fetcher["command"][-1] == "model=support-bot:3"
    )
    env = {e["name"]: e for e in fetcher["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "registry-credentials",
        "key": "rootUser",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "rootPassword"
    assert all("value" not in e or e["name"] == "HOME" for e in fetcher["env"])


def test_local_registry_is_mounted_read_only() -> None:
    pod = objects("single+local-registry")[("Deployment", "support-bot-3-vllm")]["spec"]["template"]["spec"]
    assert {"name": "registry", "hostPath": {"path": "/srv/registry", "type": "Directory"}} in pod["volumes"]
    mount = next(m for m in pod["initContainers"][0]["volumeMounts"] if m["name"] == "registry")
    assert mount == {"name": "registry", "mountPath": "/srv/registry", "readOnly": True}
    assert not [e for e in pod["initContainers"][0]["env"] if e["name"].startswith("AWS_")]
