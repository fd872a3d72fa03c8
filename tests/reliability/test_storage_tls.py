"""Object storage over TLS with a custom CA bundle (issue 17, point 10, the storage half).

A real MinIO serves HTTPS with a certificate signed by a CA made here (llmops.certs). A client that
does not know the CA is refused, and the error names the cause ("tls"), not "unreachable"; with the
CA (`s3.caBundle` mounted where a pod finds it, an explicit bundle as the operator passes it, or
AWS_CA_BUNDLE as the CLI and `python -m llmops.fetch` read it) a version registers, and is fetched
and verified by sha256.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops import certs, registry
from llmops.api import API_VERSION
from llmops.api.common import ObjectStorageLocation
from llmops.dev.cluster import LocalCluster
from llmops.engine import FetchItem
from llmops.fetch import fetch
from llmops.operators.modeldeployment import make_kind
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.registry import GateVerdict, Lineage
from llmops.storage import Credentials, ca_bundle_path, explain, open_store
from tests.cluster.modeldeployment.conftest import kubeconfig_env
from tests.helpers import eventually, operator_in_thread
from tests.reliability.storage_support import Minio, running

__all__ = ["kubeconfig_env"]

BUCKET = "registry"


@pytest.fixture(scope="module")
def tls_minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Minio, Path]]:
    """MinIO over HTTPS; the CA's PEM file."""
    tmp = tmp_path_factory.mktemp("storage-tls")
    ca, ca_key = certs.new_ca("llmops test storage CA")
    cert, key = certs.issue_certificate(
        ca, ca_key, certs.common_name("minio"), server_names=["127.0.0.1", "localhost"]
    )
    (tmp / "certs").mkdir()
    (tmp / "certs" / "public.crt").write_bytes(certs.pem(cert))
    certs.write_key(tmp / "certs" / "private.key", key)
    (tmp / "ca.crt").write_bytes(certs.pem(ca))
    (tmp / "data").mkdir()
    minio = Minio(tmp / "data", certs=tmp / "certs")
    with running(minio):
        yield minio, tmp / "ca.crt"


def _location(minio: Minio, **s3: object) -> ObjectStorageLocation:
    return ObjectStorageLocation.model_validate({"s3": {"endpoint": minio.endpoint, "bucket": BUCKET, **s3}})


def test_without_the_ca_tls_is_refused_with_its_cause(tls_minio: tuple[Minio, Path]) -> None:
    minio, _ = tls_minio
    store = open_store(_location(minio), Credentials(*minio.keys))
    with pytest.raises(Exception) as e:
        store.exists("anything")
    failure = explain(e.value)
    print(f"without the CA: {failure}")
    assert failure is not None and failure.cause == "tls" and not failure.retryable, e.value
    assert minio.keys[1] not in failure.message


def test_with_the_ca_a_version_registers_and_is_fetched(
    tls_minio: tuple[Minio, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    minio, ca = tls_minio
    # The operator's way: the ConfigMap's PEM written to a file, passed explicitly.
    location = _location(minio, caBundle={"name": "storage-ca"})
    assert ca_bundle_path(location) == "/etc/llmops/ca/storage-ca/ca.crt"
    store = open_store(location, Credentials(*minio.keys), ca_bundle=str(ca))
    store.client.create_bucket(Bucket=BUCKET)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"tls": true}')
    (model / "model.safetensors").write_bytes(b"\x01" * 300_000)
    gates = [GateVerdict(metric="loss", operator="<=", threshold=9.0, value=1.0, passed=True)]
    version = registry.register(store, "bot", model, metrics={"loss": 1.0}, gates=gates, lineage=Lineage())
    fetched = fetch(store, FetchItem("model", "bot", version.version), tmp_path / "into")
    assert (fetched / "model.safetensors").read_bytes() == b"\x01" * 300_000

    # The CLI's way, and the fetcher's when the location names no caBundle: AWS_CA_BUNDLE (the
    # operators' pods find the mounted bundle at ca_bundle_path instead), in a process of its own.
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_CA_BUNDLE": str(ca),
        "AWS_ACCESS_KEY_ID": minio.keys[0],
        "AWS_SECRET_ACCESS_KEY": minio.keys[1],
    }
    argv = [sys.executable, "-m", "llmops.fetch", "--registry", json.dumps(_location(minio).to_dict())]
    argv += ["--into", str(tmp_path / "pod"), f"model=bot:{version.version}"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pod" / "model" / "model.safetensors").stat().st_size == 300_000
    # Without it the same command fails in one line that names TLS, and no key.
    env.pop("AWS_CA_BUNDLE")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    print(f"llmops.fetch without the CA: exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode == 1 and "TLS verification" in done.stderr, done.stderr
    assert minio.keys[1] not in done.stderr and "Traceback" not in done.stderr
    print(f"with the CA: registered and fetched bot:{version.version} (2 files, 300014 bytes) over HTTPS")


@pytest.mark.usefixtures("llmops_crds", "kubeconfig_env")
def test_the_operator_reads_a_registry_over_tls_with_the_named_ca(
    tls_minio: tuple[Minio, Path], cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """A ModelDeployment on the HTTPS registry: with `caBundle` the operator resolves the version and
    makes the vLLM Deployment, whose model fetch gets the bundle mounted where open_store looks;
    without it, Stalled StorageRefused naming TLS."""
    minio, ca = tls_minio
    store = open_store(_location(minio), Credentials(*minio.keys), ca_bundle=str(ca))
    with contextlib.suppress(Exception):
        store.client.create_bucket(Bucket=BUCKET)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    gates = [GateVerdict(metric="loss", operator="<=", threshold=9.0, value=1.0, passed=True)]
    version = registry.register(
        store, "tls-bot", model, metrics={"loss": 1.0}, gates=gates, lineage=Lineage()
    )
    cluster.kubectl(
        "create", "configmap", "storage-ca", "-n", namespace, f"--from-file=ca.crt={ca}"
    )  # fmt: skip
    cluster.kubectl(
        "create", "secret", "generic", "storage-keys", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={minio.keys[0]}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={minio.keys[1]}",
    )  # fmt: skip

    def deployment(name: str, **s3: object) -> dict:
        registry_location = _location(minio, credentialsSecretRef={"name": "storage-keys"}, **s3).to_dict()
        return {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": "tls-bot", "version": version.version},
                "registry": registry_location,
                "resources": {"cpu": 1, "memory": "2Gi"},
            },
        }

    def vllm_pod() -> dict | None:
        out = cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json")
        for item in json.loads(out.stdout)["items"]:
            pod = item["spec"]["template"]["spec"]
            if pod.get("initContainers") and item["metadata"]["name"].startswith("with-ca"):
                return pod
        return None

    def stalled(name: str) -> dict | None:
        out = cluster.kubectl("get", "modeldeployments", name, "-n", namespace, "-o", "json")
        conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Stalled" and c["status"] == "True"), None)

    kinds = [make_kind(ServingSettings(resync_seconds=600, alias_poll_seconds=600), None)]
    with operator_in_thread(namespace, kinds):
        for body in (deployment("with-ca", caBundle={"name": "storage-ca"}), deployment("without-ca")):
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
        pod = eventually(vllm_pod, timeout=120)
        refused = eventually(lambda: stalled("without-ca"), timeout=120)
        assert stalled("with-ca") is None
    mounts = {m["mountPath"] for m in pod["initContainers"][0]["volumeMounts"]}
    assert "/etc/llmops/ca/storage-ca" in mounts, mounts
    print(f"with caBundle: vLLM Deployment made, CA mounted at /etc/llmops/ca/storage-ca; without: {refused}")
    assert refused["reason"] == "StorageRefused" and "TLS verification" in refused["message"], refused
    assert minio.keys[1] not in refused["message"]
