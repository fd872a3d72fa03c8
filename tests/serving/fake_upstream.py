"""A small OpenAI-shaped upstream, run as its own process, for what a real vLLM cannot be made to do on cue.

    python fake_upstream.py --port N --mode dies|pii|hang|echo [--record FILE] [--events FILE]
        [--delay SECONDS] [--hang-at read|headers|body]

- `dies`: streams two chunks, then the process exits hard (os._exit) mid-response: a real peer that
  dies, which is what the gateway must survive. (A second vLLM would do the same but takes a minute
  or more to start on this machine.)
- `pii`: answers with personal data split across stream chunks, and writes each request body it gets
  to `--record`, so a test can check what reached the model. With `tools` in the request it answers
  with a tool call whose JSON arguments hold the data (streamed in small fragments, as vLLM's tool
  parsers do); with `n` > 1, that many choices, their chunks interleaved; with `pieces` (a list of
  strings, an extra request field), those pieces as the chunks of the answer. (A tiny random model
  cannot be made to write personal data or call a tool on cue.)
- `hang`: a request that never finishes, stuck at `--hang-at`: `read` (the request's headers arrived,
  its body is read slowly, 64 KiB every 20 ms), `headers` (the body was read; no answer yet), `body`
  (the answer's headers and a first part were sent: half a JSON body, or the first SSE chunk). It
  stays stuck until its connection closes, which is written to `--events` as a JSON line
  `{"event": "closed", "id": <X-Request-Id: the gateway's id>, ...}` (after `{"event": "start", ...}`
  on arrival, and `"part"` once the first part of the answer is written): the
  test sees exactly when the gateway gave up the upstream request. vLLM aborts a request then.
- `echo`: answers every OpenAI route the gateway passes (responses, embeddings, tokenize,
  detokenize, models too) with a fixed, well-formed answer, and records each request body to
  `--record`: for endpoints the tiny CPU model cannot serve (embeddings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from aiohttp import web

PII_TEXT = "Mail bob.jones@example.com or call 555-123-4567; card 4111 1111 1111 1111."
PII_ARGS = json.dumps(
    {"email": "bob.jones@example.com", "phone": "+1 415 555 0132", "card": 4111111111111111}
)


def chunk(
    chat: bool, text: str, finish: str | None = None, index: int = 0, delta: dict | None = None
) -> bytes:
    choice = {"index": index, "finish_reason": finish}
    if chat:
        choice["delta"] = delta if delta is not None else {"content": text}
    else:
        choice["text"] = text
    obj = {"id": "fake", "object": "chunk", "created": int(time.time()), "model": "tiny", "choices": [choice]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def record_event(path: str | None, event: str, request: web.Request) -> None:
    if path:
        line = {
            "event": event,
            "id": request.headers.get("X-Request-Id"),
            "path": request.path,
            "time": time.time(),
        }
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["dies", "pii", "hang", "echo"], required=True)
    parser.add_argument("--record")
    parser.add_argument("--events")
    parser.add_argument("--hang-at", choices=["read", "headers", "body"], default="headers")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed chunks")
    args = parser.parse_args()

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def hang(request: web.Request) -> web.StreamResponse:
        record_event(args.events, "start", request)
        try:
            if args.hang_at == "read":  # a replica slow to take the body: 64 KiB at a time
                raw = b""
                while chunk_ := await request.content.read(1 << 16):
                    raw += chunk_
                    await asyncio.sleep(0.02)
                body = json.loads(raw)
            else:
                body = await request.json()
            if args.hang_at == "headers":
                await asyncio.sleep(3600)
            if body.get("stream"):
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                await resp.write(chunk(request.path.endswith("/chat/completions"), "first"))
                record_event(args.events, "part", request)
            else:
                resp = web.StreamResponse(
                    headers={"Content-Type": "application/json", "Content-Length": "100"}
                )
                await resp.prepare(request)
                await resp.write(b'{"id": "fake", "choices": [')
                record_event(args.events, "part", request)
            await asyncio.sleep(3600)
            return resp
        except (asyncio.CancelledError, ConnectionError):  # the connection was lost
            record_event(args.events, "closed", request)
            raise

    async def echo(request: web.Request) -> web.Response:
        body = await request.json()
        if args.record:
            with open(args.record, "a") as f:
                f.write(json.dumps({"path": request.path, "body": body}) + "\n")
        now = int(time.time())
        if request.path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [0.25, -0.5, 1.0]}
                for i in range(len(inputs))
            ]
            usage = {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)}
            return web.json_response(
                {"object": "list", "model": body["model"], "created": now, "data": data, "usage": usage}
            )
        if request.path == "/tokenize":
            return web.json_response(
                {"count": 3, "max_model_len": 256, "tokens": [5, 6, 7], "token_strs": None}
            )
        if request.path == "/detokenize":
            return web.json_response({"prompt": "detokenized text"})
        raise web.HTTPNotFound()

    async def models(request: web.Request) -> web.Response:
        card = {
            "id": "tiny",
            "object": "model",
            "created": 1,
            "owned_by": "vllm",
            "root": "/models/tiny",
            "parent": None,
            "max_model_len": 256,
            "permission": [],
        }
        return web.json_response({"object": "list", "data": [card]})

    async def generate(request: web.Request) -> web.StreamResponse:
        if args.mode == "hang":
            return await hang(request)
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        if args.record:
            with open(args.record, "a") as f:
                f.write(json.dumps(body) + "\n")
        tools = chat and bool(body.get("tools"))
        n = int(body.get("n") or 1)
        if not body.get("stream"):
            text = "".join(body.get("pieces") or [PII_TEXT if args.mode == "pii" else "hello"])
            choice = {"index": 0, "finish_reason": "stop"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            if tools:
                call = {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "notify", "arguments": PII_ARGS},
                }
                choice = {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                }
            usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
            return web.json_response({"id": "fake", "model": "tiny", "choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if args.mode == "dies":
            for text in ("one", " two"):
                await resp.write(chunk(chat, text))
                await asyncio.sleep(0.05)
            os._exit(1)  # die mid-stream, connection and all
        if tools:
            first = {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "notify", "arguments": ""},
                    }
                ]
            }
            await resp.write(chunk(chat, "", None, 0, first))
            for i in range(0, len(PII_ARGS), 3):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": PII_ARGS[i : i + 3]}}]}
                await resp.write(chunk(chat, "", None, 0, delta))
            await resp.write(chunk(chat, "", "tool_calls", 0, {}))
            await resp.write(b"data: [DONE]\n\n")
            return resp
        pieces = body.get("pieces") or [PII_TEXT[i : i + 5] for i in range(0, len(PII_TEXT), 5)]
        for i, piece in enumerate(pieces):
            for index in range(n):  # interleaved choices
                await resp.write(chunk(chat, piece, "stop" if i == len(pieces) - 1 else None, index))
            await asyncio.sleep(args.delay)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", generate)
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_get("/v1/models", models)
    for path in ("/v1/responses", "/v1/embeddings", "/tokenize", "/detokenize"):
        app.router.add_post(path, hang if args.mode == "hang" else echo)
    # handler_cancellation: a handler learns that its client went away (the `hang` mode's record).
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, handler_cancellation=True)


if __name__ == "__main__":
    main()
