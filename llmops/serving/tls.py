"""HTTPS for the gateway's clients: the server's certificate from a mounted Secret in the layout
cert-manager writes (`tls.crt`: the certificate chain, PEM, leaf first; `tls.key`: its private key,
PEM; `ca.crt`, the issuing CA, is not needed to serve and not read).

`ServerCertificate(directory)` loads the pair into one `ssl.SSLContext` (TLS 1.2 at least, Python's
default ciphers) and `reload()` loads it again when the files' bytes changed: a renewed certificate
(cert-manager renews before expiry; the kubelet updates the mounted Secret within a minute or so)
serves every handshake after the reload, with no restart and no connection dropped. A pair that does
not load (a half-updated Secret: new certificate, old key) is logged and the last good one kept.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from llmops.serving.logs import log

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


class ServerCertificate:
    """The TLS context of `directory`'s `tls.crt` and `tls.key`; `ssl.SSLError` or `OSError` at
    construction if they do not load."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._digest = ""
        if not self.reload():
            raise ssl.SSLError(f"no certificate could be loaded from {self.directory}")

    def _read(self) -> tuple[Path, Path, str]:
        cert, key = self.directory / CERT_FILE, self.directory / KEY_FILE
        digest = hashlib.sha256(cert.read_bytes() + b"\0" + key.read_bytes()).hexdigest()
        return cert, key, digest

    async def areload(self) -> None:
        """`reload` for the gateway's periodic tasks: in the event loop, not a thread, since handshakes
        read the same context (two small files: microseconds)."""
        self.reload()

    def reload(self) -> bool:
        """Load the pair again if its bytes changed; True if a new pair is now served."""
        try:
            cert, key, digest = self._read()
            if digest == self._digest:
                return False
            if self._digest:  # a pair that does not load must not touch the live context: loading
                # into it replaces the certificate before the key is checked, and a mismatch then
                # leaves every handshake failing; try the pair in a scratch context first
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
            self.context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError, ValueError) as e:
            if not self._digest:  # nothing loaded yet: the caller fails
                log.error("cannot load the TLS certificate from %s: %s", self.directory, e)
                return False
            log.warning(
                "cannot load the renewed TLS certificate from %s: %s; serving the last", self.directory, e
            )
            return False
        if self._digest:
            log.info("TLS certificate from %s reloaded: new connections get the renewed one", self.directory)
        self._digest = digest
        return True
