"""Real object storage that misbehaves on purpose: MinIO (optionally over HTTPS with a CA made here),
Toxiproxy in front of it for connection faults, and a small HTTP proxy that answers 503.

- `Minio`: the MinIO binary hack/tools/build.sh builds, on loopback with fresh root credentials,
  stoppable and restartable on the same port and data ("an S3 server that goes away and comes back").
- `Toxiproxy`: toxiproxy-server (hack/tools/toxiproxy) driven through its HTTP API: a proxy per
  upstream and toxics on it (reset_peer, timeout, latency, bandwidth; Toxiproxy README, "Toxics").
- `Http503`: every n-th new connection's first request is answered `503 SlowDown` with S3's XML
  error body, then closed; the other connections are piped to the upstream unchanged. Toxiproxy works
  on TCP and cannot answer HTTP, hence this one.
- `AttemptCounter`: counts the API calls and HTTP attempts of a boto3 client through its own event
  hooks (`before-call`, `before-send`), the most attempts one call made included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.dev.services import MinioServer, free_port
from tests.helpers import eventually

BIN = Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops")) / "bin"


def _stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Minio:
    """A MinIO server on loopback; `certs`: a folder with public.crt and private.key to serve HTTPS."""

    data: Path
    certs: Path | None = None
    server: MinioServer = field(init=False)
    proc: subprocess.Popen | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        binary = BIN / "minio"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: build it with hack/tools/build.sh minio")
        self.server = MinioServer.on_loopback(binary, self.data, user="llmops-test")
        if self.certs is not None:
            argv = [*self.server.argv, "--certs-dir", str(self.certs)]
            self.server = dataclasses.replace(self.server, argv=argv)

    @property
    def port(self) -> int:
        return int(self.server.endpoint.rsplit(":", 1)[1])

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.certs is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def keys(self) -> tuple[str, str]:
        return self.server.user, self.server.password

    def start(self) -> None:
        log = open(self.data.parent / f"minio-{self.port}.log", "a")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            self.server.argv,
            env={**os.environ, **self.server.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"MinIO exited; see {log.name}")
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return False
            if self.certs is not None:
                return True  # listening; the health URL needs the CA, which the tests bring
            return self.server.ready()

        eventually(ready, timeout=60)
        if self.certs is not None:
            time.sleep(1)  # the TLS listener answers once the object layer is up

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@dataclass
class Toxiproxy:
    """toxiproxy-server on a free loopback port, and its HTTP API."""

    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> None:
        binary = BIN / "toxiproxy-server"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: build it with hack/tools/build.sh toxiproxy")
        out = open(self.log, "a")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [str(binary), "-host", "127.0.0.1", "-port", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            try:
                return self._call("GET", "/version") is not None
            except OSError:  # not listening yet
                return False

        eventually(up, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            text = r.read()
        return json.loads(text) if text.strip().startswith((b"{", b"[")) else text

    def proxy(self, name: str, upstream_port: int) -> int:
        """A proxy `name` to 127.0.0.1:`upstream_port`; returns its listening port."""
        port = free_port()
        self._call(
            "POST",
            "/proxies",
            {"name": name, "listen": f"127.0.0.1:{port}", "upstream": f"127.0.0.1:{upstream_port}"},
        )
        return port

    def toxic(
        self,
        proxy: str,
        kind: str,
        attributes: dict[str, int],
        *,
        toxicity: float = 1.0,
        stream: str = "downstream",
    ) -> str:
        """Add a toxic (`kind`: reset_peer, timeout, latency, bandwidth, ...); returns its name."""
        name = f"{kind}-{stream}"
        self._call(
            "POST",
            f"/proxies/{proxy}/toxics",
            {"name": name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes},
        )
        return name

    def clear(self, proxy: str) -> None:
        """Remove every toxic of `proxy` and enable it."""
        for toxic in self._call("GET", f"/proxies/{proxy}/toxics"):
            self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic['name']}")
        self.enable(proxy, True)

    def enable(self, proxy: str, enabled: bool) -> None:
        """A disabled proxy refuses new connections and closes the open ones: the server is gone."""
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class Http503:
    """A TCP proxy on loopback that answers the first request of every `every`-th connection with
    `503 SlowDown` (S3's answer to too many requests) and closes it; it pipes the others through.
    `answered`: how many 503s it sent."""

    def __init__(self, upstream_port: int, every: int = 3) -> None:
        self.upstream, self.every = upstream_port, every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answered = self.connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            fail = self.every > 0 and self.connections % self.every == 0
            threading.Thread(target=self._serve, args=(client, fail), daemon=True).start()

    def _serve(self, client: socket.socket, fail: bool) -> None:
        with client:
            if fail:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                headers, _, body = head.partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":", 1)[1]) for line in headers.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                while len(body) < length:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                client.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(_SLOW_DOWN)}\r\nConnection: close\r\n\r\n".encode()
                    + _SLOW_DOWN
                )
                self.answered += 1
                return
            with socket.create_connection(("127.0.0.1", self.upstream)) as upstream:
                done = threading.Event()

                def pipe(a: socket.socket, b: socket.socket) -> None:
                    with contextlib.suppress(OSError):
                        while chunk := a.recv(65536):
                            b.sendall(chunk)
                    with contextlib.suppress(OSError):
                        b.shutdown(socket.SHUT_WR)
                    done.set()

                threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
                pipe(client, upstream)
                done.wait(60)


class AttemptCounter:
    """API calls and HTTP attempts of a boto3 client, counted by its own event hooks: `calls`, `attempts`
    (every send, retries included), `most` (the most attempts one call made)."""

    def __init__(self, client: Any) -> None:
        self.calls = self.attempts = self.most = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3", self._call)
        client.meta.events.register("before-send.s3", self._send)

    @property
    def retries(self) -> int:
        return self.attempts - self.calls

    def _call(self, **_: Any) -> None:
        self._local.n = 0
        with self._lock:
            self.calls += 1

    def _send(self, **_: Any) -> None:
        self._local.n = getattr(self._local, "n", 0) + 1
        with self._lock:
            self.attempts += 1
            self.most = max(self.most, self._local.n)


@contextlib.contextmanager
def running(*things: Any) -> Iterator[None]:
    """Start each of `things` (a Minio or Toxiproxy), stop them all on the way out."""
    started = []
    try:
        for thing in things:
            thing.start()
            started.append(thing)
        yield
    finally:
        for thing in reversed(started):
            thing.stop()
