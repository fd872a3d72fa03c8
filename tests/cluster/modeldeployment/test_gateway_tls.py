"""spec.gateway.tls on the real control plane: the gateway's Deployment mounts the certificate Secret
(kubernetes.io/tls, as cert-manager writes it, from a self-signed CA made here) and serves HTTPS: its
argv, port, probes, Service, ServiceMonitor and the status endpoint; a bad Secret name is refused by
the CRD's schema, naming the field."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from llmops.certs import common_name, issue_certificate, new_ca, pem
from llmops.dev.cluster import LocalCluster
from llmops.operators.modeldeployment.plan import ServingSettings
from tests.cluster.modeldeployment.support import apply, deployment, get, running_operator
from tests.helpers import LOCAL_REGISTRY_POD_SECURITY

pytestmark = [pytest.mark.usefixtures("llmops_crds"), LOCAL_REGISTRY_POD_SECURITY]


def tls_secret(name: str, namespace: str) -> dict:
    from cryptography.hazmat.primitives import serialization

    ca, ca_key = new_ca("llmops-test-ca")
    cert, key = issue_certificate(
        ca, ca_key, common_name("bot-gateway"), server_names=[f"bot-gateway.{namespace}.svc"]
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    data = {"tls.crt": pem(cert), "tls.key": key_pem, "ca.crt": pem(ca)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


@pytest.mark.usefixtures("kubeconfig_env")
def test_gateway_tls_mounts_the_secret_and_serves_https(
    cluster: LocalCluster, namespace: str, registry: Path
) -> None:
    apply(cluster, namespace, tls_secret("bot-tls", namespace))
    body = deployment(
        "bot",
        registry,
        monitoring={"serviceMonitor": True},
        gateway={"replicas": 1, "tls": {"secretName": "bot-tls"}},
    )
    with running_operator(namespace, ServingSettings(resync_seconds=600)):
        apply(cluster, namespace, body)
        cluster.kubectl("wait", "md/bot", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
        pod = get(cluster, "deployment", "bot-gateway", namespace)["spec"]["template"]["spec"]  # type: ignore[index]
        assert {"name": "tls", "secret": {"secretName": "bot-tls", "defaultMode": 0o440}} in pod["volumes"]
        (gw,) = pod["containers"]
        assert {"name": "tls", "mountPath": "/etc/llmops/tls", "readOnly": True} in gw["volumeMounts"]
        assert gw["command"][-2:] == ["--tls-dir", "/etc/llmops/tls"]
        assert gw["ports"][0]["name"] == "https"
        assert gw["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        service = get(cluster, "service", "bot-gateway", namespace)
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("https", 443)]  # type: ignore[index]
        monitor = get(cluster, "servicemonitor", "bot-gateway", namespace)
        assert monitor["spec"]["endpoints"][0]["scheme"] == "https"  # type: ignore[index]
        md = get(cluster, "md", "bot", namespace)
        assert md["status"]["endpoint"] == f"https://bot-gateway.{namespace}.svc/v1"  # type: ignore[index]
        print(f"\nrendered gateway with TLS: volumes {[v['name'] for v in pod['volumes']]}, {gw['command']}")

    bad = deployment("bad", registry, gateway={"tls": {"secretName": "Not_A_Name"}})
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0 and "spec.gateway.tls.secretName" in result.stderr, result.stderr
