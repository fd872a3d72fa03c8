"""A recording upstream for the gateway's reliability tests: answers every OpenAI route the gateway
passes with a fixed, well-formed answer (SSE when the body asks to stream) and keeps each request's
raw bytes, so a test can check exactly what the gateway forwarded. It stands in for vLLM where the
test is about the bytes that reach the model server, not about generation (a real vLLM is used where
its answers matter: tests/serving).

    upstream = RecordingUpstream(); upstream.start(); ... upstream.bodies; upstream.stop()
    python -m tests.reliability.recording_upstream --port N --slots 4 --delay 0.2   (its own process)

A replica of known capacity, for the overload test: `slots` requests are answered at once (more wait,
as vLLM queues what it cannot batch), each held `delay` seconds, so it serves `slots / delay`
requests a second. A streamed completion has `max_tokens` events (a long answer on cue, for the slow
reader test). `GET /stats`: requests, peak answered at once, and the bytes of streams written so far.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def answer(path: str, body: dict, stream: bool) -> tuple[str, list[bytes]]:
    """(content type, body parts) for `path`; a stream is several SSE events."""
    now = int(time.time())
    if path == "/v1/embeddings":
        inputs = body.get("input")
        n = len(inputs) if isinstance(inputs, list) else 1
        data = [{"object": "embedding", "index": i, "embedding": [0.25, -0.5]} for i in range(n)]
        obj = {"object": "list", "model": body.get("model"), "data": data, "usage": USAGE}
        return "application/json", [json.dumps(obj).encode()]
    if path == "/tokenize":
        return "application/json", [b'{"count": 2, "max_model_len": 256, "tokens": [5, 6]}']
    if path == "/detokenize":
        return "application/json", [b'{"prompt": "text"}']
    if path == "/v1/responses":
        resp = {
            "id": "resp_1",
            "object": "response",
            "created_at": now,
            "status": "completed",
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}
            ],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        }
        if not stream:
            return "application/json", [json.dumps(resp).encode()]
        delta = {"type": "response.output_text.delta", "output_index": 0, "delta": "hi"}
        done = {"type": "response.completed", "response": resp}
        return "text/event-stream", [
            b"event: response.output_text.delta\ndata: " + json.dumps(delta).encode() + b"\n\n",
            b"event: response.completed\ndata: " + json.dumps(done).encode() + b"\n\n",
        ]
    chat = path == "/v1/chat/completions"
    if not stream:
        choice = {"index": 0, "finish_reason": "stop"}
        choice.update({"message": {"role": "assistant", "content": "hi"}} if chat else {"text": "hi"})
        obj = {"id": "c1", "object": "completion", "created": now, "model": "tiny", "choices": [choice]}
        return "application/json", [json.dumps({**obj, "usage": USAGE}).encode()]
    choice = {"index": 0, "finish_reason": None}
    choice.update({"delta": {"content": "hi"}} if chat else {"text": "hi"})
    chunk = {"id": "c1", "object": "chunk", "created": now, "model": "tiny", "choices": [choice]}
    last = {"id": "c1", "object": "chunk", "created": now, "model": "tiny", "choices": [], "usage": USAGE}
    events = max(1, min(int(body.get("max_tokens") or 1), 1_000_000))
    return "text/event-stream", [
        *[b"data: " + json.dumps(chunk).encode() + b"\n\n"] * events,
        b"data: " + json.dumps(last).encode() + b"\n\n",
        b"data: [DONE]\n\n",
    ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: a gateway opens many connections at once


class RecordingUpstream:
    def __init__(self, delay: float = 0.0, slots: int = 0, port: int = 0, keep: bool = True) -> None:
        self.delay = delay
        self.slots = threading.BoundedSemaphore(slots) if slots else None
        self.keep = keep
        self.bodies: list[tuple[str, bytes]] = []  # (path, raw body) of every request it got
        self.lock = threading.Lock()
        self.requests = 0
        self.active = 0
        self.peak_active = 0
        self.streamed = 0  # bytes of streamed answers written
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/stats":
                    with upstream.lock:
                        stats = {
                            "requests": upstream.requests,
                            "peak_active": upstream.peak_active,
                            "streamed_bytes": upstream.streamed,
                        }
                    self._send("application/json", [json.dumps(stats).encode()])
                elif self.path == "/v1/models":
                    card = {"id": "tiny", "object": "model", "owned_by": "test", "max_model_len": 256}
                    self._send("application/json", [json.dumps({"object": "list", "data": [card]}).encode()])
                else:
                    self._send("text/plain", [b"ok"])

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with upstream.lock:
                    upstream.requests += 1
                    if upstream.keep:
                        upstream.bodies.append((self.path, raw))
                if upstream.slots is not None:
                    upstream.slots.acquire()
                with upstream.lock:
                    upstream.active += 1
                    upstream.peak_active = max(upstream.peak_active, upstream.active)
                try:
                    if upstream.delay:
                        time.sleep(upstream.delay)
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = {}
                    body = body if isinstance(body, dict) else {}
                    self._send(*answer(self.path, body, body.get("stream") is True))
                except OSError:  # the gateway closed the connection (its client went away)
                    self.close_connection = True
                finally:
                    with upstream.lock:
                        upstream.active -= 1
                    if upstream.slots is not None:
                        upstream.slots.release()

            def _send(self, ctype: str, parts: list[bytes]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                if ctype == "text/event-stream":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    batch = 64 << 10  # events written together, up to 64 KiB: as a busy server does
                    i = 0
                    while i < len(parts):
                        n = max(1, batch // (len(parts[i]) + 1))
                        frame = b"".join(parts[i : i + n])
                        i += n
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                        with upstream.lock:
                            upstream.streamed += len(frame)
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    data = b"".join(parts)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        self.server = _Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> RecordingUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=0, help="requests answered at once (0: no limit)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each answer takes")
    args = parser.parse_args()
    upstream = RecordingUpstream(args.delay, args.slots, args.port, keep=False)
    upstream.server.serve_forever()


if __name__ == "__main__":
    main()
