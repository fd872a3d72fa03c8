"""A small OpenAI-shaped upstream, run as its own process, for what a real vLLM cannot be made to do on cue.

    python fake_upstream.py --port N --mode dies|pii [--record FILE] [--delay SECONDS]

- `dies`: streams two chunks, then the process exits hard (os._exit) mid-response: a real peer that
  dies, which is what the gateway must survive. (A second vLLM would do the same but takes a minute
  or more to start on this machine.)
- `pii`: answers with personal data split across stream chunks, and writes each request body it gets
  to `--record`, so a test can check what reached the model. With `tools` in the request it answers
  with a tool call whose JSON arguments hold the data (streamed in small fragments, as vLLM's tool
  parsers do); with `n` > 1, that many choices, their chunks interleaved; with `pieces` (a list of
  strings, an extra request field), those pieces as the chunks of the answer. (A tiny random model
  cannot be made to write personal data or call a tool on cue.)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["dies", "pii"], required=True)
    parser.add_argument("--record")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed chunks")
    args = parser.parse_args()

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def generate(request: web.Request) -> web.StreamResponse:
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
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
