"""HTTPS for the gateway's clients (issue 17, point 10, the gateway half).

The gateway process serves HTTPS with a certificate in the layout cert-manager writes (`tls.crt`,
`tls.key`, `ca.crt`, as the operator mounts a kubernetes.io/tls Secret: `--tls-dir`), issued by a
self-signed CA made here (llmops.certs). The official `openai` client that trusts the CA bundle gets
its answers, plain and streamed; one that does not fails verification; plain HTTP to the port gets
no answer and the gateway goes on. A renewed certificate (a new CA's, written over the files as the
kubelet updates a mounted Secret) is served without a restart. The upstream is the recording stand-in
of tests/reliability/recording_upstream.py (the model is not what is tested).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from llmops.certs import common_name, issue_certificate, new_ca, pem
from llmops.dev.cluster import free_port
from llmops.serving.tls import CERT_FILE, KEY_FILE
from tests.helpers import eventually
from tests.reliability.recording_upstream import RecordingUpstream

ROOT = Path(__file__).parents[2]
MODEL = "tiny"


def write_secret(directory: Path, ca_name: str) -> Path:
    """A CA and a serving certificate for 127.0.0.1 and localhost, written as cert-manager's Secret is
    mounted (each file replaced whole); returns the CA bundle's path."""
    from cryptography.hazmat.primitives import serialization

    ca, ca_key = new_ca(ca_name)
    cert, key = issue_certificate(ca, ca_key, common_name("gateway"), server_names=["127.0.0.1", "localhost"])
    directory.mkdir(exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for name, data in ((KEY_FILE, key_pem), (CERT_FILE, pem(cert) + pem(ca)), ("ca.crt", pem(ca))):
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, directory / name)
    bundle = directory.parent / f"{ca_name}.pem"
    bundle.write_bytes(pem(ca))
    return bundle


def client(port: int, bundle: Path | None) -> openai.OpenAI:
    http = httpx.Client(verify=ssl.create_default_context(cafile=str(bundle))) if bundle else None
    return openai.OpenAI(
        base_url=f"https://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=30, http_client=http
    )


@pytest.fixture
def tls_gateway(tmp_path):
    upstream = RecordingUpstream().start()
    secret = tmp_path / "tls"
    bundle = write_secret(secret, "llmops-test-ca-1")
    config = tmp_path / "gateway.json"
    config.write_text(
        json.dumps({"servedModelName": MODEL, "upstreams": [{"version": "1", "replicas": [upstream.url]}]})
    )
    port = free_port()
    log = tmp_path / "gateway.log"
    argv = [sys.executable, "-m", "llmops.serving.gateway", "--config", str(config), "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--tls-dir", str(secret)], cwd=ROOT, stdout=out, stderr=out
        )

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        return "listening on https://" in log.read_text()

    eventually(up, timeout=60, interval=0.1)
    yield port, secret, bundle, proc, log
    proc.terminate()
    assert proc.wait(30) == 0
    upstream.stop()


def test_https_with_the_ca_bundle_and_not_without(tls_gateway):
    port, secret, bundle, proc, log = tls_gateway
    trusted = client(port, bundle)
    reply = trusted.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hi"
    chunks = list(trusted.completions.create(model=MODEL, prompt="x", max_tokens=3, stream=True))
    assert chunks and chunks[0].choices[0].text == "hi"

    with pytest.raises(openai.APIConnectionError) as err:
        client(port, None).completions.create(model=MODEL, prompt="x")  # the system CAs only
    cause = err.value.__cause__
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ssl.SSLCertVerificationError), err.value

    # Plain HTTP to the HTTPS port: no HTTP answer (the handshake fails), and the gateway goes on.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(100)
        except OSError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer
    assert trusted.models.list().data[0].id == MODEL

    # Renewed (here: a new CA's certificate, so the change is visible): served without a restart.
    renewed_at = time.monotonic()
    new_bundle = write_secret(secret, "llmops-test-ca-2")
    renewed = client(port, new_bundle)

    def serves_the_new_one() -> bool:
        try:
            renewed.models.list()
            return True
        except openai.APIConnectionError:
            return False

    eventually(serves_the_new_one, timeout=60, interval=0.5)
    took = time.monotonic() - renewed_at
    with pytest.raises(openai.APIConnectionError):
        client(port, bundle).models.list()
    assert proc.poll() is None and "reloaded" in log.read_text()
    print(
        f"\nHTTPS: answers with the CA bundle (plain and streamed), verification failure without it,"
        f" no answer to plain HTTP; a renewed certificate served {took:.1f} s after the files changed"
        f" (the gateway looks every 10 s), no restart"
    )
