"""The operator process stays off the `kubernetes` package (llmops/operators/kube.py, issue 17)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmops.operators import kube

# The operator's import path as `llmops operator` takes it: the CLI and its `operator` command, the
# operator module, every kind's handlers registered, the webhooks too (their certificate is made only
# when the operator starts serving them). Prints the names of the loaded modules that start with
# any of argv's prefixes.
OPERATOR_IMPORTS = """
import sys
import click
from llmops.cli import main
main.get_command(click.Context(main), "operator")
from llmops.operators.main import WebhookOptions, build_registry
build_registry(WebhookOptions())
prefixes = tuple(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m in prefixes or m.startswith(tuple(p + "." for p in prefixes)))
print(len(sys.modules), "modules;", " ".join(loaded))
"""


def operator_imports(*prefixes: str) -> list[str]:
    """The modules of `prefixes` (packages or modules) that the operator process loads at start."""
    done = subprocess.run([sys.executable, "-c", OPERATOR_IMPORTS, *prefixes], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    print(done.stdout.strip())
    return done.stdout.split(";", 1)[1].split()


def test_the_operator_process_never_imports_the_kubernetes_client() -> None:
    """kopf imports `kubernetes.client` (865 modules, ~67 MiB) when it can; the operator's package
    hides it from kopf, and nothing of ours imports it."""
    assert operator_imports("kubernetes") == []


def test_the_operator_process_loads_no_command_line_client_of_httpx() -> None:
    """httpx imports its CLI (`rich`, `pygments`: ~4 MiB) when it can; the operator's package hides it."""
    assert operator_imports("rich", "pygments", "httpx._main") == []


def test_the_operator_process_imports_no_other_command_nor_the_webhook_certificates() -> None:
    """`llmops operator` loads no other sub-command's module (the developer cluster, the registry, the
    reports), and `cryptography` (about 7 MiB) only once it serves the admission webhook (issue 17)."""
    others = ["llmops.crdgen", "llmops.dev", "llmops.watch", "llmops.registry_cli", "llmops.audit_cli"]
    assert operator_imports("cryptography", "llmops.certs", "llmops.erasure", *others) == []


def test_a_label_selector_of_equality_terms() -> None:
    assert dict(kube._selector("a=b, c.io/d=e")) == {"a": "b", "c.io/d": "e"}
    with pytest.raises(ValueError, match="only equality terms"):
        dict(kube._selector("a!=b"))
    with pytest.raises(ValueError, match="only equality terms"):
        dict(kube._selector("a"))


def test_a_selector_the_client_cannot_send_is_named_for_what_it_is(tmp_path, no_proxies) -> None:
    """`Kube.list` refuses a set-based term in either selector without sending the list, and says
    which selector it is."""
    server, config = _serve_api(tmp_path, [])
    try:
        client = kube.Kube.from_environment(config)
        with pytest.raises(ValueError, match=r"^field selector 'metadata\.name!=a'"):
            client.list("v1", "Namespace", field_selector="metadata.name!=a")
        with pytest.raises(ValueError, match=r"^label selector 'app'"):
            client.list("v1", "Namespace", label_selector="app")
        client.close()
    finally:
        _stop(server)


def test_errors_are_ours_by_status() -> None:
    assert isinstance(kube._ours(None, 404, "NotFound", "x"), kube.NotFound)
    assert isinstance(kube._ours(None, 409, "AlreadyExists", "x"), kube.Conflict)
    refused = kube._ours(None, 422, "Invalid", "spec.replicas: Invalid value")
    assert type(refused) is kube.ApiError and refused.status == 422
    assert str(kube.KindNotServed("keda.sh/v1alpha1", "ScaledObject")) == (
        "the apiserver serves no ScaledObject in keda.sh/v1alpha1"
    )
    away = kube.Unreachable(None, "ConnectError", "[Errno 111] Connection refused")
    assert away.status is None and str(away) == (
        "the apiserver did not answer: ConnectError: [Errno 111] Connection refused"
    )
    assert kube._ours("1", 429, "TooManyRequests", "storage is (re)initializing").retry_after == 1.0


def _serve_api(tmp_path, connections: list) -> tuple:
    """A threaded HTTPS server with the few paths `Kube.get` of a Namespace asks for (discovery of
    /api/v1, then the object), HTTP/1.1 keep-alive, a client certificate required; each accepted
    connection is appended to `connections`. Returns (server, kubeconfig path); `_stop` ends it."""
    import json
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from llmops.certs import common_name, issue_certificate, new_ca, pem, write_key

    ca, ca_key = new_ca("test-ca")
    served, served_key = issue_certificate(ca, ca_key, common_name("apiserver"), server_names=["127.0.0.1"])
    user, user_key = issue_certificate(ca, ca_key, common_name("operator"), client=True)
    for name, cert, key in (("server", served, served_key), ("user", user, user_key)):
        (tmp_path / f"{name}.crt").write_bytes(pem(cert))
        write_key(tmp_path / f"{name}.key", key)
    (tmp_path / "ca.crt").write_bytes(pem(ca))
    namespaces = {"name": "namespaces", "kind": "Namespace", "namespaced": False}
    answers = {
        "/api/v1": {"kind": "APIResourceList", "resources": [namespaces]},
        "/api/v1/namespaces/default": {"kind": "Namespace", "metadata": {"name": "default"}},
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            connections.append(self.client_address)
            self.request.settimeout(10)
            self.request.do_handshake()  # here, in this connection's thread, not in accept()
            super().setup()

        def do_GET(self) -> None:
            body = json.dumps(answers[self.path.split("?")[0]]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / "ca.crt")
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"https://127.0.0.1:{server.server_port}"
    cluster = {"server": address, "certificate-authority": str(tmp_path / "ca.crt")}
    user = {"client-certificate": str(tmp_path / "user.crt"), "client-key": str(tmp_path / "user.key")}
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return server, config


def _stop(server) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_proxies(monkeypatch) -> None:
    """The local server is reached directly, whatever proxy the environment names."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_threads_sharing_the_client_keep_their_connections(tmp_path, no_proxies) -> None:
    """24 threads (more than httpx's default 20 kept connections: the operator's 16 handler threads and
    asyncio's executor share one client) make 25 requests each through `Kube.from_environment`'s client
    to a real HTTPS server that requires the kubeconfig's client certificate (plus one discovery
    request): each request reuses a connection, so the server accepts at most one per thread. With
    httpx's defaults it accepted hundreds (289 and 431 in two runs), each a new TLS handshake."""
    import threading

    connections: list = []
    server, config = _serve_api(tmp_path, connections)
    client = kube.Kube.from_environment(config)
    threads, each = 24, 25
    answers: list[str] = []

    def work() -> None:
        for _ in range(each):
            answers.append(client.get("v1", "Namespace", "default")["metadata"]["name"])

    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    finally:
        client.close()
        _stop(server)
    print(f"{len(answers)} requests from {threads} threads, {len(connections)} connections accepted")
    assert answers == ["default"] * threads * each
    assert len(connections) <= threads
    assert threads <= kube.KEEPALIVE_CONNECTIONS


def test_the_client_checks_the_servers_certificate_against_the_kubeconfigs_ca(tmp_path, no_proxies) -> None:
    """The transport put in lightkube's place keeps its TLS checks: a server whose CA is not the
    kubeconfig's is refused (Unreachable, no answer read)."""
    from llmops.certs import new_ca, pem

    server, config = _serve_api(tmp_path, [])
    other, _ = new_ca("another-ca")
    (tmp_path / "ca.crt").write_bytes(pem(other))  # the kubeconfig's CA file now names another CA
    try:
        client = kube.Kube.from_environment(config)
        with pytest.raises(kube.Unreachable):
            client.get("v1", "Namespace", "default")
        client.close()
    finally:
        _stop(server)
