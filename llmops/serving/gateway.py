"""The llmops gateway: an OpenAI-compatible proxy in front of vLLM replicas.

    python -m llmops.serving.gateway --config /etc/llmops/gateway/config.json --port 8080

Endpoints: `POST /v1/completions`, `/v1/chat/completions`, `/v1/responses` (plain and SSE streaming),
`POST /v1/embeddings`, `/tokenize`, `/detokenize` (serving.endpoints says what each checks and counts),
`POST /v1/feedback` (user feedback on a completion id; with `feedback` in the config: serving.feedback),
`GET /v1/models` (what the replicas report, merged), `GET /healthz` (alive), `GET /readyz` (503 while
draining), `GET /metrics`. docs/operations.md ("The gateway's API") says which vLLM endpoints are not
passed, and why.

A request goes through: API key (401) -> a suspended deployment's 503 (`suspension` in the config:
error code model_suspended) -> the key's rate limits (429 + Retry-After) -> body checks
(400, unknown model 404) -> PII redaction of the request (by scope) -> the bounded queue (429 when full,
503 after the timeout; while no replica is ready, held up to `scaleToZeroHoldSeconds`) -> the replica
with the fewest outstanding requests in the version chosen by weight -> the response, with
answers redacted (by scope), tokens counted and a sample stored. An upstream that fails before
answering is marked unready and the request retried on another replica; one that dies mid-stream ends
the client's stream with an SSE `error` event. A client that hangs up, in any state, ends the upstream
request at once and is counted as 499 (`Gateway.handle`). On SIGTERM the gateway stops taking
requests, finishes the ones it has (up to `drainTimeoutSeconds`) and exits.

This module is the entry point: the app, its routes, start, stop and drain, and the request
pipeline, whose steps `Gateway.handle` runs in order (`_admit`, `_acquire`, `_sample`, `_send`, the
relay's `forward`, `_account`). The rest of the gateway:

| Module | What |
|---|---|
| serving.openai | the wire format: errors, request checks, the body sent upstream, SSE event handling |
| serving.endpoints | each endpoint's checks, prompt texts, usage; the merged `GET /v1/models` |
| serving.stream | the answer's way back to the client (`Relay`): whole answers and SSE streams |
| serving.replicas | `ReplicaPool`: version groups, DNS, health checks, config reload |
| serving.balancer | choosing a replica (weights, least outstanding) and the bounded queue |
| serving.server | the HTTP/1.1 server the clients talk to (asyncio protocol, httptools) |
| serving.upstream | the HTTP client of proxied requests (keep-alive, httptools) |
| serving.pii, serving.ratelimit, serving.auth | redaction, per-key limits, API keys |
| serving.sampler, serving.anomaly | payload and prompt samples; latency and error-rate anomalies |
| serving.feedback | completion ids the gateway signs; feedback bodies and their sentiment |
| serving.metrics, serving.logs | the Prometheus series; JSON log lines |

Clients are served by `llmops.serving.server` and the replicas asked through `llmops.serving.upstream`
(both asyncio protocols with httptools parsing, on uvloop; chosen over aiohttp's server and client by
measurement, bench/gateway_overhead.py --canned: see each module); health checks and model lists use
aiohttp's client (serving.replicas).

The config file is re-read when it changes (a ConfigMap update): upstream groups and weights, and
`suspension`, apply at once, so canary steps and a suspend need no restart; other fields need one.
Suspending answers new requests and those still queued 503 model_suspended; requests already at a
replica finish (`llmops_gateway_inflight_requests` falls to 0 as they do). `GET /v1/models` still lists
the model: the deployment exists and answers for it, with the suspended error.

The gateway's entry point (`python -m llmops.serving.gateway`): the app, routes, lifecycle and the
request pipeline, over 400 lines on purpose; every concern it calls lives in its own module below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from llmops import logsafe
from llmops.gateway_config import GatewayConfig, Sampling
from llmops.serving.anomaly import AnomalyMonitor
from llmops.serving.auth import KeyStore
from llmops.serving.balancer import Draining, NoReplicas, QueueFull, QueueTimeout, Replica, Suspended
from llmops.serving.endpoints import ENDPOINTS, prompt_texts, tokens
from llmops.serving.feedback import (
    BadFeedback,
    CompletionIds,
    completion_id,
    feedback_record,
    parse_feedback,
    sentiment,
)
from llmops.serving.logs import log, request_line
from llmops.serving.logs import setup as setup_logs
from llmops.serving.metrics import NO_VERSION, Metrics
from llmops.serving.openai import (
    HttpError,
    ask_for_usage,
    check_request,
    forwarded_body,
    read_json,
    redaction_endpoint,
)
from llmops.serving.pii import Redaction
from llmops.serving.ratelimit import KeyLimiter
from llmops.serving.replicas import ReplicaPool
from llmops.serving.sampler import Sampler
from llmops.serving.server import BodyTimeout, Request, Response, Server, TooLarge, json_response
from llmops.serving.stream import ClientGone, Relay
from llmops.serving.tls import ServerCertificate
from llmops.serving.upstream import Upstream, UpstreamConnectError, UpstreamError, UpstreamResponse


@dataclass(slots=True)
class Exchange:
    """One request as it goes through the steps; `_account` reads it whatever step it ended in.

    `_admit` sets `body` and the four fields after it (one object per request, not a second one
    for what `_admit` found)."""

    kind: str  # the endpoint (serving.endpoints.ENDPOINTS)
    start: float  # time.perf_counter() at arrival
    key_id: str = ""
    body: dict[str, Any] | None = None  # the parsed body (redacted when prompts are), once admitted
    data: bytes = b""  # the body sent upstream (serving.openai.forwarded_body)
    stream: bool = False
    strip_usage: bool = False  # the gateway asked for the usage chunk: it is not forwarded
    texts_in: list[str] | None = None  # the prompt's texts before redaction, for the drift sample
    replica: Replica | None = None  # the replica holding the request's slot
    dispatched: bool = False  # past the queue: counted with latency, under its version
    sampled: bool = False  # the payload goes to the payload sample
    inflight: Any = None  # the replica's in-flight gauge, while the request is at the replica
    queued: float | None = None  # seconds waited for the first replica
    code: int = 500
    reason: str | None = "internal"
    usage: dict[str, Any] | None = None
    texts: list[str] | None = None  # the answer's texts, when sampled
    rid: str = ""  # the id sent upstream as X-Request-Id (serving.feedback), once a replica is chosen


class Gateway:
    def __init__(self, config: GatewayConfig, *, config_path: Path | None = None) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.pool = ReplicaPool(config, self.metrics, config_path=config_path)
        self.keys = KeyStore(config.api_keys_path) if config.api_keys_path else None
        self.limiter = KeyLimiter(config.rate_limit)
        self.anomaly = AnomalyMonitor()
        self.payloads = self._sampler(config.payload_sampling, "payload")
        self.prompts = self._sampler(config.drift_sampling, "prompt")
        self.ids, self.feedback_store = self._feedback()
        self.redaction = Redaction(config.pii_redaction) if config.pii_redaction else None
        self.redact_prompts = self.redaction is not None and self.redaction.prompts
        self.redact_answers = self.redaction is not None and self.redaction.answers
        self.relay = Relay(self.redaction if self.redact_answers else None, self.metrics)
        self.model_names = config.model_names()
        self.lora = config.lora_enabled  # prompt logprobs refused (serving.endpoints)
        self.inflight = 0
        self.draining = False
        self.upstream: Upstream | None = None  # the proxied requests (serving.upstream says why)
        self.tasks: list[asyncio.Task[None]] = []

    def _sampler(self, config: Any, kind: str) -> Sampler | None:
        if config is None:
            return None
        return Sampler(
            config,
            kind=kind,
            on_written=self.metrics.samples.labels(kind).inc,
            on_dropped=self.metrics.samples_dropped.labels(kind).inc,
        )

    def _feedback(self) -> tuple[CompletionIds, Sampler | None]:
        """The signer of completion ids (with the mounted key; without feedback, a key of this process
        alone) and the feedback records' writer (None: no feedback endpoint)."""
        fb = self.config.feedback
        if fb is None:
            return CompletionIds(os.urandom(32)), None
        key = Path(fb.key_path).read_bytes()
        logsafe.remember(key.decode(errors="replace"))  # never in a log line (llmops/logsafe.py)
        ids = CompletionIds(key, fb.id_ttl_seconds)
        sampling = Sampling(
            rate=1.0,
            destination=fb.destination,
            flush_interval_seconds=fb.flush_interval_seconds,
            max_buffered=fb.max_buffered,
        )
        store = Sampler(
            sampling,
            kind="feedback",
            on_written=self.metrics.samples.labels("feedback").inc,
            on_dropped=self.metrics.samples_dropped.labels("feedback").inc,
            keep_failed=True,
        )
        return ids, store

    async def _every(self, seconds: float, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await fn()
            except Exception:
                log.exception("background task %s failed", getattr(fn, "__name__", fn))
            await asyncio.sleep(seconds)

    async def reload_keys(self) -> None:
        """API keys, and the completion id key (a recreated Secret: the ids of the old key stop verifying)."""
        if self.keys is not None:
            await asyncio.to_thread(self.keys.reload)
        if self.config.feedback is not None:
            try:
                key = await asyncio.to_thread(Path(self.config.feedback.key_path).read_bytes)
            except OSError as e:  # a Secret mid-update can be briefly absent: keep the last key
                log.warning("cannot read the completion id key: %s; keeping the last", e)
                return
            if key and key != self.ids.key:
                log.info("the completion id key changed; ids issued with the last one no longer verify")
                self.ids.key = key

    async def anomaly_tick(self) -> None:
        for signal_, verdict in self.anomaly.tick().items():
            self.metrics.anomaly_score.labels(signal_).set(verdict.score)
            self.metrics.anomaly.labels(signal_).set(1 if verdict.anomalous else 0)

    # Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.pool.open()
        self.upstream = Upstream(connect_timeout=5, total_timeout=cfg.upstream_timeout_seconds)
        await self.pool.resolve()
        await self.pool.check_health()
        spawn = asyncio.get_running_loop().create_task
        self.tasks = [
            spawn(self._every(cfg.dns_refresh_seconds, self.pool.resolve)),
            spawn(self._every(cfg.health_check_interval_seconds, self.pool.check_health)),
            spawn(self._every(2.0, self.pool.reload_config)),
            spawn(self._every(10.0, self.reload_keys)),
            spawn(self._every(cfg.anomaly_window_seconds, self.anomaly_tick)),
        ]
        self.tasks += [spawn(s.run()) for s in self._samplers() if s is not None]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sampler in self._samplers():
            if sampler is not None:
                await sampler.flush()
        await self.pool.close()
        if self.upstream is not None:
            self.upstream.close()

    def _samplers(self) -> tuple[Sampler | None, ...]:
        return self.payloads, self.prompts, self.feedback_store

    async def drain(self, timeout: float) -> None:
        """Refuse new requests and wait for the ones in progress (queued ones included)."""
        self.draining = True
        self.pool.dispatcher.draining = True
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.inflight:
            log.warning("drain timeout: %d requests still in progress are cut off", self.inflight)
        self.pool.dispatcher.fail_all(Draining())

    def server(self) -> Server:
        """The HTTP server of the gateway's routes (serving.server; in the running loop)."""
        routes = {("POST", path): self.handler(kind) for kind, path in ENDPOINTS.items()}
        routes[("GET", "/v1/models")] = self.models
        if self.feedback_store is not None:
            routes[("POST", "/v1/feedback")] = self.feedback
        routes[("GET", "/healthz")] = self.healthz
        routes[("GET", "/readyz")] = self.readyz
        routes[("GET", "/metrics")] = self.metrics_endpoint
        return Server(routes, max_body=self.config.max_request_bytes)

    # Small endpoints -----------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.draining:
            return json_response({"status": "draining"}, status=503)
        return json_response(
            {"status": "ready", "readyReplicas": sum(r.ready for r in self.pool.balancer.replicas())}
        )

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _authenticate(self, request: Request) -> str:
        if self.keys is None:
            return "anonymous"
        key_id = self.keys.identify(request.header("authorization"))
        if key_id is None:
            raise HttpError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                "unauthorized",
                "authentication_error",
            )
        return key_id

    async def models(self, request: Request) -> Response:
        try:
            self._authenticate(request)
        except HttpError as e:
            self.metrics.count(NO_VERSION, e.status, e.reason)
            return e.response()
        return json_response({"object": "list", "data": await self.pool.model_cards()})

    async def feedback(self, request: Request) -> Response:
        """`POST /v1/feedback` (serving.feedback has the body and the id): 201 with the feedback's id;
        401 without a valid key, 429 over the key's rate limit, 400 naming the bad field, 404 for an id
        not issued to this key (forged, another key's, another deployment's, expired: one answer).

        Every feedback is stored (no sampling), as a `feedback` record beside the payload samples; a
        repeat on (completion_id, name, user) is a new record, and readers keep the last by `time`."""
        try:
            if self.draining:
                raise self._refused(Draining())
            tenant = self._authenticate(request)
            self._limit(tenant)
            body = read_json(await self._read(request))
            try:
                fb = parse_feedback(body)
            except BadFeedback as e:
                raise HttpError(400, str(e), "bad_request", param=e.field) from e
            now = time.time()
            issued = self.ids.verify(fb.completion_id, tenant, now)
            if issued is None:
                raise HttpError(
                    404,
                    f"no completion '{fb.completion_id}' was served to this API key (or it is older than"
                    " feedback is accepted for)",
                    "completion_not_found",
                    "not_found_error",
                    param="completion_id",
                )
        except HttpError as e:
            if e.status in (401, 429):
                self.metrics.count(NO_VERSION, e.status, e.reason)
            return e.response()
        assert self.feedback_store is not None and self.config.feedback is not None
        deployment, model = self.config.feedback.model_deployment, self.config.served_model_name
        record = feedback_record(fb, tenant, deployment, model, issued.version, now)
        self.feedback_store.add(record)
        self.metrics.feedback(issued.version, fb.name, sentiment(fb.value))
        answer = {k: record[k] for k in ("id", "completion_id", "model", "version")}
        return json_response({**answer, "object": "feedback", "created": int(now)}, status=201)

    # The proxy ---------------------------------------------------------------------------------

    def handler(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        """The handler of endpoint `kind` (see serving.endpoints): `handle` itself, with no coroutine
        of its own in between (one frame less per request and per resumption)."""
        return functools.partial(self.handle, kind=kind)

    async def handle(self, request: Request, kind: str) -> Response:
        """One proxied request, from the API key to its last byte: `_admit`, `_acquire`, `_sample`,
        `_send`, the relay's `forward`, and `_account` whatever happened, once the answer is written
        (one coroutine: the steps that wait are awaited from here, a coroutine less per request).

        Whatever state the request is in (reading its body, queued for a replica, connecting, sending
        upstream, waiting for the upstream's headers, reading its body, streaming), a client that hangs
        up ends it: serving.server cancels this task when the connection is lost; the upstream request
        is then closed (vLLM aborts a request whose connection closes), the replica's slot is released,
        and it is counted as 499 (`client_disconnect`). A request whose client is gone before it is
        sent upstream never reaches a replica.
        """
        start = time.perf_counter()
        if self.draining:
            self.metrics.count(NO_VERSION, 503, "draining")
            return self._refused(Draining()).response()
        self.inflight += 1
        ex = Exchange(kind, start)
        try:
            await self._admit(request, ex)
            waited = time.perf_counter()
            ex.replica = await self._acquire()
            ex.queued = time.perf_counter() - waited
            ex.dispatched = True
            ex.sampled = self._sample(ex, ex.replica)
            upstream = await self._send(request, ex, ex.data)
            ex.code, ex.reason, ex.usage, ex.texts, resp = await self.relay.forward(
                request, ex.replica, upstream, kind, ex.stream, ex.strip_usage, ex.sampled, start
            )
            return resp
        except HttpError as e:
            ex.code, ex.reason = e.status, e.reason
            return e.response()
        except ClientGone:
            ex.code, ex.reason = 499, "client_disconnect"
            return Response(status=499)  # nobody reads it: the connection is closed
        except asyncio.CancelledError:
            if request.gone:
                ex.code, ex.reason = 499, "client_disconnect"
            else:  # the server is stopping (drain timeout)
                ex.code, ex.reason = 503, "drain_timeout"
            raise
        except (UpstreamError, TimeoutError, OSError) as e:
            ex.code, ex.reason = 502, "upstream_error"
            return HttpError(
                502, f"the model server failed: {type(e).__name__}", ex.reason, "upstream_error"
            ).response()
        finally:
            # serving.server writes a whole answer in the same step as this return, so the client has it
            # before the bookkeeping, which the next turn of the loop does (`_finish`): a request's
            # latency does not carry it. Nothing that comes after the answer can see it undone: the
            # handlers of requests that arrive meanwhile run after it, in the order they were scheduled.
            asyncio.get_running_loop().call_soon(self._finish, ex)

    def _finish(self, ex: Exchange) -> None:
        try:
            self._account(ex)
        finally:
            self.inflight -= 1

    async def _admit(self, request: Request, ex: Exchange) -> None:
        """The checks before the queue: API key (401), a suspended deployment (503 model_suspended), rate
        limits (429), body (413, 400, unknown model 404), then the request's redaction and usage chunk;
        `ex.key_id` is set first, for `_account`, and `ex.body` to `ex.texts_in` once admitted."""
        ex.key_id = self._authenticate(request)
        if self.pool.suspension is not None:
            raise self._refused(Suspended())
        self._limit(ex.key_id)
        try:
            raw = await self._read(request)
        except ConnectionError as e:  # the client went away while sending its body
            raise ClientGone() from e
        body = read_json(raw)  # 400 naming the field (serving.endpoints.parse_body)
        kind = ex.kind
        check_request(body, kind, self.model_names, self.lora)
        texts_in = prompt_texts(body, kind) if self.prompts is not None else []
        changed = False
        if self.redaction is not None and self.redact_prompts:
            changed = self.redaction.request(body, redaction_endpoint(body, kind))
        stream = bool(body.get("stream"))
        strip_usage, add_usage = ask_for_usage(body, kind)
        changed = changed or (strip_usage and not add_usage)
        ex.data = forwarded_body(raw, body, changed=changed, add_usage=add_usage)
        ex.body, ex.stream, ex.strip_usage, ex.texts_in = body, stream, strip_usage, texts_in

    async def _read(self, request: Request) -> bytes:
        """The request's body: 413 beyond max_request_bytes, 408 when it stops coming (serving.server's
        body_timeout; the connection closes after the answer)."""
        try:
            return await request.read()
        except TooLarge as e:
            raise HttpError(
                413, f"the request body exceeds {self.config.max_request_bytes} bytes", "too_large"
            ) from e
        except BodyTimeout as e:
            raise HttpError(408, str(e), "body_timeout") from e

    def _limit(self, key_id: str) -> None:
        """The key's rate limits (serving.ratelimit): 429 with Retry-After beyond them."""
        decision = self.limiter.admit(key_id)
        if not decision.allowed:
            raise HttpError(
                429,
                f"rate limit exceeded ({decision.reason}); retry after {decision.retry_after_header} s",
                "rate_limited",
                "rate_limit_error",
                retry_after=decision.retry_after_header,
            )

    def _refused(self, e: QueueFull | QueueTimeout | NoReplicas | Draining | Suspended) -> HttpError:
        """The answer to a request that the dispatcher, the draining or the suspended gateway refuses.

        Suspended (the config's `suspension`): 503, type service_unavailable, code model_suspended, the
        message naming the ModelDeployment. No Retry-After (a suspension lasts until someone resumes it,
        not a known time), and `x-should-retry: false`, which the official OpenAI clients obey instead of
        retrying a 503."""
        if isinstance(e, Suspended):
            who = self.pool.suspension
            name = f"{who.namespace}/{who.model_deployment}" if who else "this model deployment"
            return HttpError(
                503,
                f"model deployment {name} is suspended (spec.suspend is true): it answers no requests"
                " until it is resumed",
                "suspended",
                "service_unavailable",
                code="model_suspended",
                headers={"x-should-retry": "false"},
            )
        if isinstance(e, QueueFull):
            return HttpError(
                429,
                f"overloaded: {self.config.max_queue} requests are already waiting",
                "queue_full",
                "rate_limit_error",
                retry_after="1",
            )
        if isinstance(e, QueueTimeout):
            return HttpError(
                503,
                "no replica became free in time; retry later",
                "queue_timeout",
                "service_unavailable",
                retry_after="5",
            )
        if isinstance(e, NoReplicas):
            return HttpError(
                503,
                "no replica is ready to serve this model",
                "no_ready_replicas",
                "service_unavailable",
                retry_after="10",
            )
        return HttpError(
            503, "the gateway is shutting down; retry", "draining", "service_unavailable", retry_after="1"
        )

    async def _acquire(self) -> Replica:
        """A replica slot from the queue (serving.balancer's Dispatcher), its refusals as HTTP errors."""
        try:
            return await self.pool.dispatcher.acquire()
        except (QueueFull, QueueTimeout, NoReplicas, Draining, Suspended) as e:
            raise self._refused(e) from e

    def _sample(self, ex: Exchange, replica: Replica) -> bool:
        """Whether the payload is sampled (recorded by `_account`); a prompt chosen for the drift
        sample is added now, redacted when PII redaction is on."""
        sampled = self.payloads is not None and self.payloads.chosen()
        if self.prompts is not None and ex.texts_in and self.prompts.chosen():
            texts = ex.texts_in
            sample = [self.redaction.text(t) for t in texts] if self.redaction else texts
            self.prompts.add(
                {
                    "time": time.time(),
                    "model": ex.body.get("model") if ex.body is not None else None,
                    "version": replica.version,
                    "text": "\n".join(sample),
                }
            )
        return sampled

    async def _send(self, request: Request, ex: Exchange, data: bytes) -> UpstreamResponse:
        """Send `data` to `ex.replica` and return once the response's headers are in.

        A replica that refuses the connection (nothing reached it) is marked not ready and the request
        goes round the queue again, to another replica; the third refusal fails it (502). `ex.replica`
        and `ex.inflight` follow the replica the request is at.
        """
        assert ex.replica is not None and self.upstream is not None
        replica = ex.replica
        path = ENDPOINTS[ex.kind]
        headers = {"Content-Type": "application/json"}
        tries = 0
        while True:
            if request.gone:  # nothing was sent: the replica never sees it
                raise ClientGone()
            # The answer's id (serving.feedback): vLLM takes it from X-Request-Id; a client's own
            # X-Request-Id is not passed on, so no tenant chooses an id.
            ex.rid = headers["X-Request-Id"] = self.ids.issue(ex.key_id, replica.version, time.time())
            if self.feedback_store is not None:
                self.metrics.feedback_series(replica.version)
            inflight = ex.inflight = self.metrics.inflight.labels(replica.version)
            inflight.inc()  # at the replica from the moment it is sent
            try:
                return await self.upstream.request(replica.endpoint(path), data, headers)
            except UpstreamConnectError as e:
                inflight.dec()
                ex.inflight = None
                # Nothing reached the replica: mark it unready and go round the queue again.
                log.warning(
                    "replica %s (version %s) refused a connection: %s; marked not ready",
                    replica.url,
                    replica.version,
                    e,
                )
                self.pool.mark_unready(replica)
                tries += 1
                if tries == 3:
                    raise
                ex.replica = None
                self.pool.dispatcher.release(replica)
                self.metrics.errors.labels(replica.version, "upstream_connect").inc()  # retried: no 502
                replica = ex.replica = await self._acquire()

    def _account(self, ex: Exchange) -> None:
        """The end of every request, whatever step it ended in: latency (once past the queue), the
        request and error counters, the anomaly monitor, tokens (counted and charged to the key's
        limits), the payload sample, the replica's slot back, and the request log line."""
        if ex.inflight is not None:
            ex.inflight.dec()
        replica, usage = ex.replica, ex.usage
        version = replica.version if replica is not None else NO_VERSION
        elapsed = time.perf_counter() - ex.start
        counts = None
        if usage:
            counts = tokens(usage.get("prompt_tokens")), tokens(usage.get("completion_tokens"))
            self.limiter.charge_tokens(ex.key_id, counts[0] + counts[1])
        self.metrics.answered(
            version, ex.code, ex.reason, elapsed if ex.dispatched else None, ex.queued, counts
        )
        if ex.reason != "suspended":  # refused on purpose: not the service failing
            self.anomaly.observe(elapsed, ex.code >= 500)
        if ex.sampled and self.payloads is not None and ex.body is not None:
            self.payloads.add(self._record(ex.body, ex, version, elapsed))
        if replica is not None:
            self.pool.dispatcher.release(replica)
        if ex.dispatched or ex.code == 499:
            request_line(ex.key_id, version, ex.code, elapsed, ex.stream, ex.reason, ex.kind)

    def _record(self, body: dict[str, Any], ex: Exchange, version: str, elapsed: float) -> dict[str, Any]:
        """A payload sample: `id` is the answer's id as the client got it (serving.feedback's
        `completion_id`; feedback records name it), `user` the request's OpenAI `user` field."""
        kind, texts = ex.kind, ex.texts
        request = {k: v for k, v in body.items() if k not in ("stream_options",)}
        if self.redaction is not None and not self.redact_prompts:  # else the body is redacted already
            request = json.loads(json.dumps(request))
            self.redaction.request(request, redaction_endpoint(request, kind))
        if self.redaction is not None and texts is not None and not self.redact_answers:
            texts = [self.redaction.text(t) for t in texts]
        user = body.get("user")
        return {
            "id": completion_id(kind, ex.rid) if ex.rid else None,
            "time": time.time(),
            "endpoint": kind,
            "version": version,
            "status": ex.code,
            "latency_seconds": round(elapsed, 4),
            "user": user if isinstance(user, str) else None,
            "request": request,
            "completions": texts,
            "usage": ex.usage,
        }


async def serve(
    config_path: Path, host: str, port: int, ready_file: Path | None = None, tls_dir: Path | None = None
) -> None:
    """Run the gateway until SIGTERM; with `tls_dir` (a mounted certificate Secret: serving.tls), over
    HTTPS, the certificate reloaded when the Secret is renewed."""
    config = GatewayConfig.load(config_path)
    certificate = ServerCertificate(tls_dir) if tls_dir is not None else None
    gateway = Gateway(config, config_path=config_path)
    await gateway.start()
    if certificate is not None:
        gateway.tasks.append(
            asyncio.get_running_loop().create_task(gateway._every(10.0, certificate.areload))
        )
    # A client that hangs up cancels its handler, whatever it is waiting for (serving.server);
    # Gateway.handle turns that into a 499.
    server = gateway.server()
    listener = await server.listen(
        host, port, backlog=1024, tls=certificate.context if certificate is not None else None
    )
    scheme = "https" if certificate is not None else "http"
    log.info("gateway for %s listening on %s://%s:%d", config.served_model_name, scheme, host, port)
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
    listener.close()
    await server.shutdown()
    await gateway.stop()
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llmops.serving.gateway", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, type=Path, help="GatewayConfig JSON file")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help="serve HTTPS with tls.crt and tls.key from this directory (a mounted kubernetes.io/tls Secret)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logs(args.log_level)
    uvloop.run(serve(args.config, args.host, args.port, tls_dir=args.tls_dir))


if __name__ == "__main__":
    main()
