"""The gateway's server certificate: a renewed pair is served, a pair that does not load (a new
certificate with the old key) is refused and the last good pair keeps serving every handshake."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from llmops.certs import common_name, issue_certificate, new_ca, pem
from llmops.serving.tls import CERT_FILE, KEY_FILE, ServerCertificate


def pair(ca, ca_key) -> tuple[bytes, bytes]:
    cert, key = issue_certificate(ca, ca_key, common_name("gateway"), server_names=["localhost"])
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem(cert), key_pem


def handshake(server: ServerCertificate, ca_pem: bytes) -> str:
    """One TLS handshake over a socket pair; the subject serial of the certificate the client saw."""
    a, b = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        try:
            with server.context.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as e:
            seen["server"] = e

    t = threading.Thread(target=serve)
    t.start()
    client = ssl.create_default_context(cadata=ca_pem.decode())
    with client.wrap_socket(b, server_hostname="localhost") as c:
        seen["cert"] = c.getpeercert()["serialNumber"]
        c.send(b"x")
    t.join(5)
    return str(seen["cert"])


def test_a_mismatched_renewal_is_refused_and_the_last_pair_keeps_serving(tmp_path: Path) -> None:
    ca, ca_key = new_ca("test-ca")
    (cert_a, key_a), (cert_b, key_b) = pair(ca, ca_key), pair(ca, ca_key)
    (tmp_path / CERT_FILE).write_bytes(cert_a)
    (tmp_path / KEY_FILE).write_bytes(key_a)
    server = ServerCertificate(tmp_path)
    first = handshake(server, pem(ca))
    (tmp_path / CERT_FILE).write_bytes(cert_b)  # half-updated: the new certificate, the old key
    assert server.reload() is False
    assert handshake(server, pem(ca)) == first  # still served, still the first pair
    (tmp_path / KEY_FILE).write_bytes(key_b)  # the update completes
    assert server.reload() is True
    assert handshake(server, pem(ca)) != first
