"""The replicas behind the gateway: which there are, which are ready, and the queue in front of them.

`ReplicaPool` owns, on top of serving.balancer's `Balancer` and `Dispatcher`:
- the version groups of the config (`apply`): added, re-weighted and removed in place, so replicas of
  unchanged groups keep their state (outstanding requests, health);
- DNS (`resolve`, every `dnsRefreshSeconds`): a Service-backed group's replicas are the addresses its
  headless Service resolves to (none while scaled to zero);
- health (`check_health`, every `healthCheckIntervalSeconds`): `GET /health` of each replica, with
  `Replica.observe_health` deciding when one goes out and comes back; `mark_unready` for a replica that
  refused a proxied request's connection;
- config reload (`reload_config`, every 2 s): a changed config file applies its upstream groups and
  weights, and its `suspension`, at once (canary steps and a suspend need no restart); an invalid one is
  logged and ignored. Suspending answers the requests still queued (`Suspended`); those at a replica
  go on;
- `model_cards`, the answer of the gateway's `GET /v1/models`: what one ready replica of each version
  reports (`models`), merged;
- the aiohttp session of those checks and model lists; proxied requests go through serving.upstream.

The `llmops_gateway_ready_replicas` and `llmops_gateway_weight` gauges follow every change.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp

from llmops.gateway_config import GatewayConfig, Suspension, UpstreamGroup
from llmops.serving.balancer import Balancer, Dispatcher, Group, Replica, Suspended
from llmops.serving.endpoints import merge_model_cards
from llmops.serving.logs import log
from llmops.serving.metrics import Metrics


class ReplicaPool:
    """The version groups and replicas of one gateway; `dispatcher.acquire()` hands out a replica slot."""

    def __init__(self, config: GatewayConfig, metrics: Metrics, *, config_path: Path | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.config_path = config_path  # re-read by reload_config
        self.config_digest = hashlib.sha256(config_path.read_bytes()).hexdigest() if config_path else ""
        self.balancer = Balancer([], config.max_outstanding_per_replica)
        self.groups: dict[str, UpstreamGroup] = {}  # the config's groups, by version
        self.apply(config.upstreams)
        self.dispatcher = Dispatcher(
            self.balancer,
            max_queue=config.max_queue,
            queue_timeout=config.queue_timeout_seconds,
            hold_timeout=config.scale_to_zero_hold_seconds,
            on_pending=metrics.pending.set,
        )
        self.session: aiohttp.ClientSession | None = None  # health checks and model lists, once open
        self.model_names = config.model_names()
        self.started = int(time.time())  # the `created` of the cards no replica reported yet
        self._cards: list[dict[str, Any]] | None = None  # the last merged GET /v1/models answer
        self._cards_at = 0.0
        self.suspension: Suspension | None = None  # live: see reload_config
        self.suspend(config.suspension)

    def open(self) -> None:
        """Open the session of the health checks and model lists (inside the running event loop)."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=self.config.upstream_timeout_seconds, sock_connect=5),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # a proxy keeps no cookies; the jar costs every request
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def apply(self, groups: list[UpstreamGroup]) -> None:
        """Add, update and remove version groups; replicas of unchanged groups keep their state."""
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
        self.groups = wanted

    async def resolve(self) -> None:
        """Resolve every Service-backed group to its ready pods' addresses."""
        loop = asyncio.get_running_loop()
        for version, g in list(self.groups.items()):
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
        """Ask every replica's `GET /health` at once."""
        replicas = self.balancer.replicas()
        await asyncio.gather(*(self._check(r) for r in replicas))
        self.changed()

    def changed(self) -> None:
        """Publish the ready counts and hand newly free replicas to waiting requests."""
        for version, group in self.balancer.groups.items():
            self.metrics.ready.labels(version).set(len(group.ready()))
        self.dispatcher.wake()

    def mark_unready(self, replica: Replica) -> None:
        """Take `replica` out until a health check passes (it refused a connection)."""
        replica.ready = False
        self.changed()

    async def reload_config(self) -> None:
        """Apply the config file's upstream groups if the file changed (other fields need a restart)."""
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
        self.apply(config.upstreams)
        self.suspend(config.suspension)
        log.info("config reloaded: weights %s", {g.version: g.weight for g in config.upstreams})
        await self.resolve()
        await self.check_health()

    def suspend(self, suspension: Suspension | None) -> None:
        """Suspend (`suspension` set) or resume. On suspending, the requests waiting in the queue get
        `Suspended` at once (they reached no model); requests at a replica are left to finish."""
        was, self.suspension = self.suspension, suspension
        self.metrics.suspended.set(0 if suspension is None else 1)
        if (was is None) != (suspension is None):
            log.info("%s", "suspended: every request is answered 503" if suspension else "resumed")
        if suspension is not None and was is None:
            self.dispatcher.fail_all(Suspended())

    async def models(self, replicas: list[Replica]) -> list[dict[str, Any]] | None:
        """`data` of `GET /v1/models` from the first of `replicas` that answers it, or None."""
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(total=5)
        for replica in replicas[:2]:
            try:
                async with self.session.get(replica.endpoint("/v1/models"), timeout=timeout) as r:
                    if r.status == 200:
                        data = (await r.json()).get("data")
                        if isinstance(data, list):
                            return data
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, AttributeError) as e:
                log.warning("replica %s did not list its models: %s", replica.url, e)
        return None

    async def model_cards(self) -> list[dict[str, Any]]:
        """The `data` of `GET /v1/models`: what the versions' replicas report, merged.

        One ready replica per version is asked (`merge_model_cards` says how the lists combine); the
        answer is kept for `healthCheckIntervalSeconds`. While no replica answers (scaled to zero),
        the last merged answer is given; before any replica ever answered, the accepted names with
        only the fields the OpenAI schema requires (`owned_by` "llmops", `created` the gateway's start).
        """
        now = time.monotonic()
        if self._cards and now - self._cards_at < self.config.health_check_interval_seconds:
            return self._cards
        groups = list(self.balancer.groups.values())
        lists = await asyncio.gather(*(self.models(g.ready()) for g in groups))
        reports = [(g.role, g.weight, d) for g, d in zip(groups, lists, strict=True) if d is not None]
        if reports:
            self._cards, self._cards_at = merge_model_cards(reports, self.model_names), now
        if self._cards is not None:
            return self._cards
        return [
            {"id": name, "object": "model", "created": self.started, "owned_by": "llmops"}
            for name in sorted(self.model_names)
        ]
