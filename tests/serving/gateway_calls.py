"""What the gateway tests of this tier share: the models the session's vLLM serves (conftest.py),
plain HTTP calls, a TCP relay that appears later, raw sockets a test hangs up on, and the gateway's
log lines."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request

MODEL = "tiny"


ADAPTER = "tiny-lora"  # the LoRA adapter the session's vLLM serves beside MODEL (conftest.py)


EMBED = "tiny-embed"  # the model name of the embedding vLLM (conftest.py)


PII_TEXT = "Mail bob.jones@example.com or call 555-123-4567; card 4111 1111 1111 1111."  # fake_upstream's


PII_ARGS = {"email": "bob.jones@example.com", "phone": "+1 415 555 0132", "card": 4111111111111111}


REDACT_ALL = {"scope": "promptsAndAnswers", "regions": ["US"]}


NO_EOS = {"ignore_eos": True}  # a random model may stop at once; these tests want exactly max_tokens


def post(url: str, body: bytes | str | dict, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


def single(vllm_url: str, **extra) -> dict:
    return {"servedModelName": MODEL, "upstreams": [{"version": "1", "replicas": [vllm_url]}], **extra}


class Relay:
    """A TCP relay that appears on a port later: a replica that comes up after a scale from zero."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.running = False
        self.server.close()


def send_raw(port: int, path: str, body: dict, request_id: str) -> socket.socket:
    """Send one request on a raw socket and return it unread: the test hangs up when it chooses."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nX-Request-Id: {request_id}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def upstream_events(path) -> list[tuple[str, str]]:
    """(event, request id) lines that fake_upstream.py --mode hang wrote."""
    if not path.exists():
        return []
    return [(e["event"], e["id"]) for e in map(json.loads, path.read_text().splitlines())]


def logged(gw, **fields) -> list[dict]:
    """The gateway's JSON log lines that have all of `fields`."""
    lines = [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if all(line.get(k) == v for k, v in fields.items())]
