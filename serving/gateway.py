"""The llmops gateway: an OpenAI-compatible proxy in front of vLLM replicas.

    python -m serving.gateway --config /etc/llmops/gateway/config.json --port 8080

Endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (plain and SSE streaming),
`GET /v1/models`, `GET /healthz` (alive), `GET /readyz` (503 while draining), `GET /metrics`.

A request goes through: API key (401) -> the key's rate limits (429 + Retry-After) -> body checks
(400, unknown model 404) -> PII redaction of the request (by scope) -> the bounded queue (429 when full,
503 after the timeout; while no replica is ready, held up to `scaleToZeroHoldSeconds`) -> the replica
with the fewest outstanding requests in the version chosen by weight -> the response, with
answers redacted (by scope), tokens counted and a sample stored. An upstream that fails before
answering is marked unready and the request retried on another replica; one that dies mid-stream ends
the client's stream with an SSE `error` event. On SIGTERM the gateway stops taking requests, finishes
the ones it has (up to `drainTimeoutSeconds`) and exits.

The config file is re-read when it changes (a ConfigMap update): upstream groups and weights apply
at once, so canary steps need no restart; other fields need one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import re
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from llmops.gateway_config import GatewayConfig, UpstreamGroup
from serving.anomaly import AnomalyMonitor
from serving.auth import KeyStore
from serving.balancer import Balancer, Dispatcher, Draining, NoReplicas, QueueFull, QueueTimeout, Replica
from serving.pii import AnswerRedactor, Redaction
from serving.ratelimit import KeyLimiter
from serving.sampler import Sampler

log = logging.getLogger("llmops.gateway")
disable_created_metrics()  # no *_created series: they double the series count for nothing here

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
NO_VERSION = "none"  # the version label of requests refused before one was chosen
# An event worth parsing on the fast path: one with a usage object (not `"usage": null`), or [DONE].
USAGE_OR_DONE = re.compile(rb'"usage"\s*:\s*\{|\[DONE\]')


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "llmops_gateway_requests",
            "Requests answered, by version and HTTP status code.",
            ["version", "code"],
            registry=r,
        )
        self.errors = Counter(
            "llmops_gateway_errors",
            "Failed requests, by version and reason.",
            ["version", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "llmops_gateway_request_duration_seconds",
            "Time from request to the end of the response, by version.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llmops_gateway_time_to_first_token_seconds",
            "Time from request to the first streamed token, by version.",
            ["version"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "llmops_gateway_queue_wait_seconds",
            "Time spent waiting for a replica.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "llmops_gateway_prompt_tokens", "Prompt tokens, by version.", ["version"], registry=r
        )
        self.completion_tokens = Counter(
            "llmops_gateway_completion_tokens", "Completion tokens, by version.", ["version"], registry=r
        )
        self.pending = Gauge(
            "llmops_gateway_pending_requests",
            "Requests waiting for a replica (queued while busy, or held while scaled to zero).",
            registry=r,
        )
        self.inflight = Gauge(
            "llmops_gateway_inflight_requests",
            "Requests at the replicas, by version.",
            ["version"],
            registry=r,
        )
        self.ready = Gauge(
            "llmops_gateway_ready_replicas",
            "Replicas passing health checks, by version.",
            ["version"],
            registry=r,
        )
        self.weight = Gauge(
            "llmops_gateway_weight", "Configured traffic weight, by version.", ["version"], registry=r
        )
        self.anomaly_score = Gauge(
            "llmops_gateway_anomaly_score",
            "Robust z-score of the last window, by signal.",
            ["signal"],
            registry=r,
        )
        self.anomaly = Gauge(
            "llmops_gateway_anomaly", "1 while the signal's last window is anomalous.", ["signal"], registry=r
        )
        self.samples = Counter(
            "llmops_gateway_samples_written", "Sampled records written, by kind.", ["kind"], registry=r
        )
        self.samples_dropped = Counter(
            "llmops_gateway_samples_dropped", "Sampled records dropped, by kind.", ["kind"], registry=r
        )


def error_body(message: str, type_: str, code: int | str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        reason: str,
        type_: str = "invalid_request_error",
        retry_after: str = "",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.type, self.retry_after = (
            status,
            message,
            reason,
            type_,
            retry_after,
        )

    def response(self) -> web.Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return web.json_response(
            error_body(self.message, self.type, self.status), status=self.status, headers=headers
        )


def _texts_in_prompt(body: dict[str, Any], chat: bool) -> list[str]:
    """The prompt as plain strings (for sampling and drift)."""
    if chat:
        out = []
        for m in body.get("messages", []):
            content = m.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out.extend(
                    p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
        return out
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list):
        return [p for p in prompt if isinstance(p, str)]
    return []


def forwarded_body(raw: bytes, body: dict[str, Any], *, changed: bool, add_usage: bool) -> bytes:
    """The request body sent upstream: the client's bytes where possible, else `body` re-encoded.

    `add_usage` (the body has no `stream_options` key) splices `stream_options.include_usage` into the
    client's bytes instead of re-encoding the parsed body, which keeps a long prompt's cost off the hot
    path; no key is duplicated.
    """
    text = raw.lstrip()
    if changed or (add_usage and not text.startswith(b"{")):
        return json.dumps(body).encode()
    return b'{"stream_options":{"include_usage":true},' + text[1:] if add_usage else raw


def validate(body: Any, chat: bool, model_names: set[str]) -> None:
    """Checks that catch malformed requests before they use a queue slot; vLLM checks the rest."""
    if not isinstance(body, dict):
        raise HttpError(400, "the request body must be a JSON object", "bad_request")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise HttpError(400, "'model' is required and must be a string", "bad_request")
    if model not in model_names:
        raise HttpError(
            404,
            f"the model {model!r} does not exist; this endpoint serves {sorted(model_names)}",
            "model_not_found",
            "not_found_error",
        )
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HttpError(400, "'messages' is required and must be a non-empty list", "bad_request")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise HttpError(400, f"messages[{i}] must be an object with a string 'role'", "bad_request")
    else:
        prompt = body.get("prompt")
        ok = isinstance(prompt, str) or (
            isinstance(prompt, list)
            and prompt
            and (all(isinstance(p, str) for p in prompt) or all(isinstance(p, int) for p in prompt))
        )
        if not ok:
            raise HttpError(
                400, "'prompt' is required: a string, a list of strings or of token ids", "bad_request"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise HttpError(400, "'stream' must be true or false", "bad_request")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise HttpError(400, f"'{name}' must be a non-negative integer", "bad_request")


class ClientGone(Exception):
    """Writing to the client failed: it disconnected."""


class StreamState:
    """What the gateway tracks of one streamed response."""

    def __init__(self, answer: AnswerRedactor | None, collect: bool, strip_usage: bool) -> None:
        self.answer = answer  # redacts every text field of every choice, when answers are redacted
        self.texts: dict[int, list[str]] | None = {} if collect else None
        self.strip_usage = strip_usage
        self.usage: dict[str, Any] | None = None
        self.first_token_at: float | None = None
        self.done = False

    def transform(self, payload: bytes, chat: bool) -> bytes | None:
        """The event's data to forward (None: drop it); records usage, first token and text."""
        if payload.strip() == b"[DONE]":
            self.done = True
            return payload
        try:
            obj = json.loads(payload)
        except ValueError:
            return payload
        if not isinstance(obj, dict):
            return payload
        usage = obj.get("usage")
        if usage:
            self.usage = usage
        choices = obj.get("choices") or []
        if self.strip_usage and usage and not choices:
            return None
        if self.strip_usage and "usage" in obj:
            obj.pop("usage")
        changed = self.strip_usage and usage is not None
        key = "content" if chat else "text"
        if self.first_token_at is None and any(
            isinstance(c, dict) and _text_of(c, chat, key) for c in choices
        ):
            self.first_token_at = time.perf_counter()
        if self.answer is not None:
            changed = self.answer.event(obj) or changed
        for choice in choices:
            text = _text_of(choice, chat, key) if isinstance(choice, dict) else None
            if self.texts is not None and isinstance(text, str):
                self.texts.setdefault(choice.get("index", 0), []).append(text)
        return json.dumps(obj, separators=(",", ":")).encode() if changed else payload


class Gateway:
    def __init__(self, config: GatewayConfig, *, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.config_digest = hashlib.sha256(config_path.read_bytes()).hexdigest() if config_path else ""
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.balancer = Balancer([], config.max_outstanding_per_replica)
        self.upstreams: dict[str, UpstreamGroup] = {}
        self.apply_upstreams(config.upstreams)
        self.dispatcher = Dispatcher(
            self.balancer,
            max_queue=config.max_queue,
            queue_timeout=config.queue_timeout_seconds,
            hold_timeout=config.scale_to_zero_hold_seconds,
            on_pending=self.metrics.pending.set,
        )
        self.keys = KeyStore(config.api_keys_path) if config.api_keys_path else None
        self.limiter = KeyLimiter(config.rate_limit)
        self.anomaly = AnomalyMonitor()
        self.payloads = self._sampler(config.payload_sampling, "payload")
        self.prompts = self._sampler(config.drift_sampling, "prompt")
        self.redaction = Redaction(config.pii_redaction) if config.pii_redaction else None
        self.redact_prompts = self.redaction is not None and self.redaction.prompts
        self.redact_answers = self.redaction is not None and self.redaction.answers
        self.model_names = config.model_names()
        self.inflight = 0
        self.draining = False
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.started = int(time.time())

    def _sampler(self, config: Any, kind: str) -> Sampler | None:
        if config is None:
            return None
        return Sampler(
            config,
            kind=kind,
            on_written=self.metrics.samples.labels(kind).inc,
            on_dropped=self.metrics.samples_dropped.labels(kind).inc,
        )

    # Upstreams ---------------------------------------------------------------------------------

    def apply_upstreams(self, groups: list[UpstreamGroup]) -> None:
        """Add, update and remove version groups; replicas of unchanged groups keep their state."""
        from serving.balancer import Group

        wanted = {g.version: g for g in groups}
        for version in list(self.balancer.groups):
            if version not in wanted:
                del self.balancer.groups[version]
                self.metrics.weight.remove(version)
                self.metrics.ready.labels(version).set(0)
        for version, g in wanted.items():
            if version not in self.balancer.groups:
                self.balancer.groups[version] = Group(version, g.role, g.weight)
            group = self.balancer.groups[version]
            group.role, group.weight = g.role, g.weight
            if g.replicas:
                self.balancer.set_replicas(version, [u.rstrip("/") for u in g.replicas])
            self.metrics.weight.labels(version).set(g.weight)
        self.upstreams = wanted

    async def resolve(self) -> None:
        """Resolve every Service-backed group to its ready pods' addresses."""
        loop = asyncio.get_running_loop()
        for version, g in list(self.upstreams.items()):
            if g.service is None:
                continue
            try:
                infos = await loop.getaddrinfo(g.service.host, g.service.port, type=socket.SOCK_STREAM)
                addrs = sorted({info[4][0] for info in infos})
            except socket.gaierror:
                addrs = []  # no ready pods: the headless Service has no records (scaled to zero)
            urls = [f"{g.service.scheme}://{f'[{a}]' if ':' in a else a}:{g.service.port}" for a in addrs]
            if version in self.balancer.groups and self.balancer.set_replicas(version, urls):
                log.info("version %s: %d replicas from %s", version, len(urls), g.service.host)
                await self.check_health()

    async def _check(self, replica: Replica) -> None:
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(total=min(5.0, self.config.health_check_interval_seconds * 2))
        refused = False
        try:
            async with self.session.get(f"{replica.url}/health", timeout=timeout) as r:
                ok = r.status == 200
        except aiohttp.ClientConnectorError:  # nothing listens: out at once
            ok, refused = False, True
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if replica.observe_health(ok, refused=refused):
            state = "ready" if replica.ready else f"not ready ({replica.failures} failed checks)"
            log.info("replica %s (version %s) is %s", replica.url, replica.version, state)

    async def check_health(self) -> None:
        replicas = self.balancer.replicas()
        await asyncio.gather(*(self._check(r) for r in replicas))
        self._replicas_changed()

    def _replicas_changed(self) -> None:
        for version, group in self.balancer.groups.items():
            self.metrics.ready.labels(version).set(len(group.ready()))
        self.dispatcher.wake()

    async def _every(self, seconds: float, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await fn()
            except Exception:
                log.exception("background task %s failed", getattr(fn, "__name__", fn))
            await asyncio.sleep(seconds)

    async def reload_config(self) -> None:
        if self.config_path is None:
            return
        try:
            data = self.config_path.read_bytes()
        except OSError:
            return
        digest = hashlib.sha256(data).hexdigest()
        if digest == self.config_digest:
            return
        try:
            config = GatewayConfig.model_validate_json(data)
        except ValueError as e:
            log.error("the changed config at %s is invalid, keeping the old one: %s", self.config_path, e)
            self.config_digest = digest
            return
        self.config_digest = digest
        self.apply_upstreams(config.upstreams)
        log.info("config reloaded: weights %s", {g.version: g.weight for g in config.upstreams})
        await self.resolve()
        await self.check_health()

    async def reload_keys(self) -> None:
        if self.keys is not None:
            await asyncio.to_thread(self.keys.reload)

    async def anomaly_tick(self) -> None:
        for signal_, verdict in self.anomaly.tick().items():
            self.metrics.anomaly_score.labels(signal_).set(verdict.score)
            self.metrics.anomaly.labels(signal_).set(1 if verdict.anomalous else 0)

    # Lifecycle ---------------------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        cfg = self.config
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=cfg.upstream_timeout_seconds, sock_connect=5),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # a proxy keeps no cookies; the jar costs every request
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        await self.resolve()
        await self.check_health()
        spawn = asyncio.get_running_loop().create_task
        self.tasks = [
            spawn(self._every(cfg.dns_refresh_seconds, self.resolve)),
            spawn(self._every(cfg.health_check_interval_seconds, self.check_health)),
            spawn(self._every(2.0, self.reload_config)),
            spawn(self._every(10.0, self.reload_keys)),
            spawn(self._every(cfg.anomaly_window_seconds, self.anomaly_tick)),
        ]
        self.tasks += [spawn(s.run()) for s in (self.payloads, self.prompts) if s is not None]

    async def stop(self, app: web.Application) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sampler in (self.payloads, self.prompts):
            if sampler is not None:
                await sampler.flush()
        if self.session is not None:
            await self.session.close()

    async def drain(self, timeout: float) -> None:
        """Refuse new requests and wait for the ones in progress (queued ones included)."""
        self.draining = True
        self.dispatcher.draining = True
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.inflight:
            log.warning("drain timeout: %d requests still in progress are cut off", self.inflight)
        self.dispatcher.fail_all(Draining())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_request_bytes)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        return app

    # Small endpoints -----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response(
            {"status": "ready", "readyReplicas": sum(r.ready for r in self.balancer.replicas())}
        )

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def _authenticate(self, request: web.Request) -> str:
        if self.keys is None:
            return "anonymous"
        key_id = self.keys.identify(request.headers.get("Authorization"))
        if key_id is None:
            raise HttpError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                "unauthorized",
                "authentication_error",
            )
        return key_id

    async def models(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
        except HttpError as e:
            self._count(NO_VERSION, e.status, e.reason)
            return e.response()
        data = [
            {"id": name, "object": "model", "created": self.started, "owned_by": "llmops"}
            for name in sorted(self.model_names)
        ]
        return web.json_response({"object": "list", "data": data})

    # The proxy ---------------------------------------------------------------------------------

    def _count(self, version: str, code: int, reason: str | None = None) -> None:
        self.metrics.requests.labels(version, str(code)).inc()
        if reason:
            self.metrics.errors.labels(version, reason).inc()

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, chat=True)

    async def handle(self, request: web.Request, chat: bool) -> web.StreamResponse:
        start = time.perf_counter()
        if self.draining:
            self._count(NO_VERSION, 503, "draining")
            return HttpError(
                503, "the gateway is shutting down; retry", "draining", "service_unavailable", retry_after="1"
            ).response()
        self.inflight += 1
        try:
            return await self._handle(request, chat, start)
        finally:
            self.inflight -= 1

    async def _handle(self, request: web.Request, chat: bool, start: float) -> web.StreamResponse:
        replica: Replica | None = None
        try:
            key_id = self._authenticate(request)
            decision = self.limiter.admit(key_id)
            if not decision.allowed:
                raise HttpError(
                    429,
                    f"rate limit exceeded ({decision.reason}); retry after {decision.retry_after_header} s",
                    "rate_limited",
                    "rate_limit_error",
                    retry_after=decision.retry_after_header,
                )
            try:
                raw = await request.read()
                body = json.loads(raw)
            except web.HTTPRequestEntityTooLarge as e:
                raise HttpError(
                    413, f"the request body exceeds {self.config.max_request_bytes} bytes", "too_large"
                ) from e
            except ValueError as e:
                raise HttpError(400, f"the request body is not valid JSON: {e}", "bad_request") from e
            validate(body, chat, self.model_names)
            prompt_texts = _texts_in_prompt(body, chat)
            changed = False
            if self.redaction is not None and self.redact_prompts:
                changed = self.redaction.request(body, "chat" if chat else "completions")
            stream = bool(body.get("stream"))
            strip_usage = add_usage = False
            if stream:
                options = body.get("stream_options")
                if not isinstance(options, dict) or not options.get("include_usage"):
                    # Ask for the usage chunk, for token accounting; it is not forwarded.
                    strip_usage = True
                    add_usage = "stream_options" not in body
                    changed = changed or not add_usage
                    body["stream_options"] = {
                        **(options if isinstance(options, dict) else {}),
                        "include_usage": True,
                    }
            data = forwarded_body(raw, body, changed=changed, add_usage=add_usage)
            wait_start = time.perf_counter()
            try:
                replica = await self.dispatcher.acquire()
            except QueueFull as e:
                raise HttpError(
                    429,
                    f"overloaded: {self.config.max_queue} requests are already waiting",
                    "queue_full",
                    "rate_limit_error",
                    retry_after="1",
                ) from e
            except QueueTimeout as e:
                raise HttpError(
                    503,
                    "no replica became free in time; retry later",
                    "queue_timeout",
                    "service_unavailable",
                    retry_after="5",
                ) from e
            except NoReplicas as e:
                raise HttpError(
                    503,
                    "no replica is ready to serve this model",
                    "no_ready_replicas",
                    "service_unavailable",
                    retry_after="10",
                ) from e
            except Draining as e:
                raise HttpError(
                    503,
                    "the gateway is shutting down; retry",
                    "draining",
                    "service_unavailable",
                    retry_after="1",
                ) from e
            self.metrics.queue_wait.observe(time.perf_counter() - wait_start)
        except HttpError as e:
            self._count(NO_VERSION, e.status, e.reason)
            self.anomaly.observe(time.perf_counter() - start, e.status >= 500)
            return e.response()

        sampled = self.payloads is not None and self.payloads.chosen()
        if self.prompts is not None and prompt_texts and self.prompts.chosen():
            texts = [self.redaction.text(t) for t in prompt_texts] if self.redaction else prompt_texts
            self.prompts.add(
                {
                    "time": time.time(),
                    "model": body["model"],
                    "version": replica.version,
                    "text": "\n".join(texts),
                }
            )
        path = "/v1/chat/completions" if chat else "/v1/completions"
        headers = {"Content-Type": "application/json"}
        if rid := request.headers.get("X-Request-Id"):
            headers["X-Request-Id"] = rid
        code, reason, usage, response_texts = 500, "internal", None, None
        try:
            for attempt in range(3):
                try:
                    upstream = await self.session.post(replica.endpoint(path), data=data, headers=headers)
                    break
                except aiohttp.ClientConnectorError as e:
                    # Nothing reached the replica: mark it unready and go round the queue again.
                    log.warning(
                        "replica %s (version %s) refused a connection: %s; marked not ready",
                        replica.url,
                        replica.version,
                        e,
                    )
                    replica.ready = False
                    self._replicas_changed()
                    if attempt == 2:
                        raise
                    old, replica = replica, None
                    self.dispatcher.release(old)
                    self.metrics.errors.labels(old.version, "upstream_connect").inc()  # retried: no 502
                    replica = await self.dispatcher.acquire()
            code, reason, usage, response_texts, resp = await self._forward(
                request, replica, upstream, chat, stream, strip_usage, sampled, start
            )
            return resp
        except (QueueFull, QueueTimeout, NoReplicas, Draining) as e:
            code, reason = 503, "no_ready_replicas"
            return HttpError(
                503,
                f"no replica could take the request: {type(e).__name__}",
                reason,
                "service_unavailable",
                retry_after="5",
            ).response()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            code, reason = 502, "upstream_error"
            return HttpError(
                502, f"the model server failed: {type(e).__name__}", reason, "upstream_error"
            ).response()
        finally:
            version = replica.version if replica is not None else NO_VERSION
            elapsed = time.perf_counter() - start
            self.metrics.latency.labels(version).observe(elapsed)
            self._count(version, code, reason)
            self.anomaly.observe(elapsed, code >= 500)
            if usage:
                prompt_tokens = int(usage.get("prompt_tokens") or 0)
                completion_tokens = int(usage.get("completion_tokens") or 0)
                self.metrics.prompt_tokens.labels(version).inc(prompt_tokens)
                self.metrics.completion_tokens.labels(version).inc(completion_tokens)
                self.limiter.charge_tokens(key_id, prompt_tokens + completion_tokens)
            if sampled and self.payloads is not None:
                self.payloads.add(self._record(body, chat, version, code, elapsed, usage, response_texts))
            if replica is not None:
                self.dispatcher.release(replica)
            log.info(
                "request",
                extra={
                    "key": key_id,
                    "version": version,
                    "code": code,
                    "seconds": round(elapsed, 4),
                    "stream": stream,
                    "reason": reason,
                },
            )

    def _record(
        self,
        body: dict[str, Any],
        chat: bool,
        version: str,
        code: int,
        elapsed: float,
        usage: dict[str, Any] | None,
        texts: list[str] | None,
    ) -> dict[str, Any]:
        request = {k: v for k, v in body.items() if k not in ("stream_options",)}
        if self.redaction is not None and not self.redact_prompts:  # else the body is redacted already
            request = json.loads(json.dumps(request))
            self.redaction.request(request, "chat" if chat else "completions")
        if self.redaction is not None and texts is not None and not self.redact_answers:
            texts = [self.redaction.text(t) for t in texts]
        return {
            "time": time.time(),
            "endpoint": "chat" if chat else "completions",
            "version": version,
            "status": code,
            "latency_seconds": round(elapsed, 4),
            "request": request,
            "completions": texts,
            "usage": usage,
        }

    async def _forward(
        self,
        request: web.Request,
        replica: Replica,
        upstream: aiohttp.ClientResponse,
        chat: bool,
        stream: bool,
        strip_usage: bool,
        sampled: bool,
        start: float,
    ) -> tuple[int, str | None, dict[str, Any] | None, list[str] | None, web.StreamResponse]:
        self.metrics.inflight.labels(replica.version).inc()
        try:
            extra = {"X-Llmops-Version": replica.version}
            if upstream.status != 200 or not stream:
                payload = await upstream.read()
                usage, texts = None, None
                if upstream.status == 200:
                    payload, usage, texts = self._finish_plain(payload, chat, sampled)
                reason = None if upstream.status < 400 else f"upstream_{upstream.status}"
                ctype = upstream.headers.get("Content-Type", "application/json")
                resp = web.Response(
                    body=payload, status=upstream.status, headers={"Content-Type": ctype, **extra}
                )
                return upstream.status, reason, usage, texts, resp
            return await self._stream(
                request, upstream, chat, strip_usage, sampled, start, replica.version, extra
            )
        finally:
            self.metrics.inflight.labels(replica.version).dec()
            upstream.release()

    def _finish_plain(
        self, payload: bytes, chat: bool, sampled: bool
    ) -> tuple[bytes, dict[str, Any] | None, list[str] | None]:
        try:
            obj = json.loads(payload)
        except ValueError:
            return payload, None, None
        if not isinstance(obj, dict):
            return payload, None, None
        if self.redaction is not None and self.redact_answers and self.redaction.response(obj, chat):
            payload = json.dumps(obj, ensure_ascii=False).encode()
        key = "content" if chat else "text"
        choices = obj.get("choices") or []
        texts = [t for c in choices if isinstance(t := _text_of(c, chat, key, "message"), str)]
        return payload, obj.get("usage"), texts if sampled else None

    @staticmethod
    def _transform_event(event: bytes, state: StreamState, chat: bool) -> bytes | None:
        """One SSE event through `StreamState.transform`; None drops it."""
        lines = []
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                out = state.transform(line[5:].strip(), chat)
                if out is None:
                    return None
                lines.append(b"data: " + out)
            else:
                lines.append(line)
        return b"\n".join(lines)

    async def _stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        chat: bool,
        strip_usage: bool,
        sampled: bool,
        start: float,
        version: str,
        extra: dict[str, str],
    ) -> tuple[int, str | None, dict[str, Any] | None, list[str] | None, web.StreamResponse]:
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **extra},
        )
        await resp.prepare(request)
        answer = self.redaction.answer(chat) if self.redaction is not None and self.redact_answers else None
        state = StreamState(answer, sampled, strip_usage)
        parse_all = state.answer is not None or state.texts is not None
        code, reason = 200, None
        resp_ended = False
        try:
            # Forward whole buffers of events as they arrive; parse only the events that need it (the
            # usage chunk, [DONE], or every event when redacting or sampling). JSON-decoding every
            # chunk would cost more CPU than the rest of the proxy together.
            pending = b""
            async for data in upstream.content.iter_any():
                if b"\r" in data:
                    data = data.replace(b"\r\n", b"\n")
                events = (pending + data).split(b"\n\n")
                pending = events.pop()
                out: list[bytes] = []
                for event in events:
                    if not event:
                        continue
                    if parse_all or USAGE_OR_DONE.search(event):
                        event = self._transform_event(event, state, chat)
                        if event is None:
                            continue
                    elif (
                        state.first_token_at is None
                        and b'"content":""' not in event
                        and b'"text":""' not in event
                    ):
                        state.first_token_at = time.perf_counter()
                    if not state.done or event.startswith(b"data: [DONE]"):
                        out.append(event + b"\n\n")
                if out and not resp_ended:
                    try:
                        if state.done:  # the last events and the end of the body in one write
                            resp_ended = True
                            await resp.write_eof(b"".join(out))
                        else:
                            await resp.write(b"".join(out))
                    except (ConnectionError, RuntimeError) as e:
                        raise ClientGone() from e
                # After [DONE], read on to the end of the upstream body (it follows at once), so the
                # connection goes back to the pool instead of being closed half-read.
            if not state.done:
                raise aiohttp.ClientPayloadError("the stream ended before [DONE]")
        except (aiohttp.ClientError, TimeoutError) as e:
            if not state.done:  # after [DONE] the client has its whole answer: only the tail is lost
                code, reason = 502, "upstream_disconnect"
                log.warning("upstream stream of version %s failed: %s", version, e)
                event = error_body(f"the model server failed mid-stream: {e}", "upstream_error", 502)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await resp.write(b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n")
        except ClientGone:  # the client went away; closing the upstream response aborts the work
            code, reason = 499, "client_disconnect"
        if state.first_token_at is not None:
            self.metrics.ttft.labels(version).observe(state.first_token_at - start)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return code, reason, state.usage, _joined(state.texts), resp


def _text_of(choice: Any, chat: bool, key: str, holder: str = "delta") -> Any:
    """A choice's text: chat `delta.content` (or `message.content`), completions `text`."""
    part = choice.get(holder) if chat and isinstance(choice, dict) else choice
    return part.get(key) if isinstance(part, dict) else None


def _joined(texts: dict[int, list[str]] | None) -> list[str] | None:
    """Each choice's streamed text, in choice order."""
    return ["".join(texts[i]) for i in sorted(texts)] if texts is not None else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; request logs carry ids and numbers, never keys or prompt text."""

    FIELDS = ("key", "version", "code", "seconds", "stream", "reason")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        for field in self.FIELDS:
            if hasattr(record, field):
                out[field] = getattr(record, field)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


async def serve(config_path: Path, host: str, port: int, ready_file: Path | None = None) -> None:
    config = GatewayConfig.load(config_path)
    gateway = Gateway(config, config_path=config_path)
    runner = web.AppRunner(gateway.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    log.info("gateway for %s listening on %s:%d", config.served_model_name, host, port)
    if ready_file is not None:
        ready_file.write_text(str(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info(
        "draining: refusing new requests, waiting up to %ss for %d in progress",
        config.drain_timeout_seconds,
        gateway.inflight,
    )
    await gateway.drain(config.drain_timeout_seconds)
    await runner.cleanup()
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="GatewayConfig JSON file")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    try:
        import uvloop  # optional: a faster event loop where installed (vLLM brings it)

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(args.config, args.host, args.port))


if __name__ == "__main__":
    main()
