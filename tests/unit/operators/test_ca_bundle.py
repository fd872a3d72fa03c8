"""s3.caBundle reaches every pod that reads the location: the ConfigMap mounted read-only where
llmops.storage.open_store looks for it (`ca_bundle_path`), and nothing added without one (the golden
files of tests/unit/golden, which name no caBundle, stay byte-identical)."""

from __future__ import annotations

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.manifests import ca_bundle_mounts
from llmops.operators.modeldeployment.builders import build as build_md
from llmops.storage import ca_bundle_path

from .modeldeployment.cases import SETTINGS, case
from .trainingjob.support import build as build_tj
from .trainingjob.support import kuberay, spec_of

CA = {"name": "storage-ca.example.com", "key": "trust-bundle.pem"}
MOUNTED = "/etc/llmops/ca/storage-ca.example.com/trust-bundle.pem"


def _mounted(pod: dict, container: dict) -> str | None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        configmap = volumes[mount["name"]].get("configMap", {})
        if configmap.get("name") == CA["name"]:
            assert mount["readOnly"]
            return f"{mount['mountPath']}/{CA['key']}"
    return None


def test_the_model_fetch_gets_the_registry_ca_bundle() -> None:
    parent, spec, plan = case("single")
    body = spec.to_dict()
    body["registry"]["s3"]["caBundle"] = CA
    spec = ModelDeploymentSpec.model_validate(body)
    assert ca_bundle_path(spec.registry) == MOUNTED
    deployment = next(m for m in build_md(spec, parent, plan, SETTINGS) if m["kind"] == "Deployment"
                      and m["spec"]["template"]["spec"].get("initContainers"))  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    assert _mounted(pod, pod["initContainers"][0]) == MOUNTED
    assert _mounted(pod, pod["containers"][0]) is None  # vLLM reads no storage


def test_training_pods_get_the_registry_ca_bundle() -> None:
    output = spec_of("full").output.to_dict()
    output["registry"]["s3"]["caBundle"] = CA
    spec = spec_of("full", output=output)
    pod = build_tj(kuberay(spec))["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert _mounted(pod, pod["containers"][0]) == MOUNTED


def test_no_ca_bundle_adds_nothing() -> None:
    assert ca_bundle_mounts(None) == ([], [])
    _, spec, _ = case("single")
    assert ca_bundle_mounts(spec.registry) == ([], [])
