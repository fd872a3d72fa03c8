"""What one reconcile decided to serve, and the operator-wide settings the builders read.

The reconcile resolves versions in the registry and decides roles and weights; the result is a
`Plan` (the served versions and the LoRA adapters), which every builder module renders. Pure types
and the two small decisions on them (`stable_replicas`, `retiring_version`), no I/O: `canary.py`,
`monitoring.py` and the builders import them without importing each other.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from llmops import engine
from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from llmops.operators import settings

Role = Literal["stable", "canary", "previous"]

# A Prometheus duration as prometheus-operator's CRDs take it (monitoringv1.Duration): whole numbers
# of each unit, largest first, each at most once; the units' lengths in seconds beside.
_DURATION = re.compile(
    r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?"
)
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


@dataclass(frozen=True)
class ServingSettings:
    """Operator-wide settings the builders need (flags / environment of the operator)."""

    serving_image: str = "ghcr.io/llmops/serving:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    # Namespaces whose Prometheus may scrape the serving pods (NetworkPolicy namespaceSelector).
    prometheus_namespace_labels: Mapping[str, str] = field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "monitoring"}
    )
    # Extra labels on ServiceMonitor/PodMonitor/PrometheusRule (a Prometheus' ruleSelector, say).
    monitor_labels: Mapping[str, str] = field(default_factory=dict)
    scrape_interval: str = "15s"
    # How long the gateway holds requests while a scaled-to-zero version starts.
    scale_to_zero_hold_seconds: float = 600
    # Reconcile every object this often even without changes (repairs drift of its children)...
    resync_seconds: float = 300
    # ...but all objects' resyncs together at most this many a second: beyond resync_seconds times
    # resync_rate objects (600), each one's period is objects ÷ resync_rate seconds (operators.pacing).
    resync_rate: float = 2.0
    # A ModelDeployment that names any model by alias is reconciled this often (up to 300 such
    # objects, below), so that an alias moved in the registry is served within this delay (plus the
    # rollout). Bounded polling: an object store has no change notifications that work the same on S3,
    # MinIO and a directory...
    alias_poll_seconds: float = 30
    # ...but all their polls together at most this many a second (each a poke, a reconcile and the
    # registry's reads): beyond alias_poll_seconds times alias_poll_rate such objects (300), each one
    # polls every objects ÷ alias_poll_rate seconds (operators.pacing).
    alias_poll_rate: float = 10.0
    # spec.suspend: the model servers keep their replicas until the gateway has taken the suspend and
    # its requests in flight are done (Prometheus), or this long after the suspend at most.
    suspend_drain_seconds: float = 600

    @property
    def scrape_seconds(self) -> float:
        """`scrape_interval` in seconds: a Prometheus duration ("15s", "1m30s", "500ms", "1d"), whole
        numbers of y, w, d, h, m, s and ms in that order, as prometheus-operator's CRDs take it for a
        monitor's `interval` (its Duration pattern; y = 365d, w = 7d). Raises ValueError when it is not
        one, or is 0."""
        match = _DURATION.fullmatch(self.scrape_interval.strip())
        if not match or not any(match.groups()):
            raise ValueError(f"scrape interval {self.scrape_interval!r} is not a duration like 15s or 1m30s")
        seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if n)
        if seconds <= 0:
            raise ValueError(f"scrape interval {self.scrape_interval!r} is not above 0")
        return seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str | None] | None = None) -> ServingSettings:
        """LLMOPS_SERVING_IMAGE, LLMOPS_PROMETHEUS_URL, LLMOPS_PROMETHEUS_NAMESPACE_SELECTOR (k=v,...),
        LLMOPS_MONITOR_LABELS (k=v,...), LLMOPS_SCRAPE_INTERVAL (a Prometheus duration),
        LLMOPS_RESYNC_SECONDS (> 0), LLMOPS_RESYNC_RATE (> 0), LLMOPS_ALIAS_POLL_SECONDS (> 0),
        LLMOPS_ALIAS_POLL_RATE (> 0), LLMOPS_SUSPEND_DRAIN_SECONDS (>= 0); each the default when unset
        or blank (operators.settings). Raises ValueError naming the variable when one is not what it
        takes."""
        env = os.environ if env is None else env
        defaults = cls()

        def pairs(name: str, default: dict[str, str]) -> dict[str, str]:
            found = settings.text(env, name, "")
            return dict(p.split("=", 1) for p in found.split(",") if "=" in p) if found else default

        chosen = cls(
            serving_image=settings.text(env, "LLMOPS_SERVING_IMAGE", defaults.serving_image),
            prometheus_url=settings.text(env, "LLMOPS_PROMETHEUS_URL", defaults.prometheus_url),
            prometheus_namespace_labels=pairs(
                "LLMOPS_PROMETHEUS_NAMESPACE_SELECTOR", defaults.prometheus_namespace_labels
            ),
            monitor_labels=pairs("LLMOPS_MONITOR_LABELS", {}),
            scrape_interval=settings.text(env, "LLMOPS_SCRAPE_INTERVAL", defaults.scrape_interval),
            resync_seconds=settings.seconds(
                env, "LLMOPS_RESYNC_SECONDS", defaults.resync_seconds, "the resync period"
            ),
            resync_rate=settings.rate(env, "LLMOPS_RESYNC_RATE", defaults.resync_rate, "resyncs"),
            alias_poll_seconds=settings.seconds(
                env, "LLMOPS_ALIAS_POLL_SECONDS", defaults.alias_poll_seconds, "the alias poll period"
            ),
            alias_poll_rate=settings.rate(
                env, "LLMOPS_ALIAS_POLL_RATE", defaults.alias_poll_rate, "alias polls"
            ),
            suspend_drain_seconds=settings.seconds(
                env,
                "LLMOPS_SUSPEND_DRAIN_SECONDS",
                defaults.suspend_drain_seconds,
                "the longest a suspend waits for the gateway to drain",
                zero=True,
            ),
        )
        try:
            _ = chosen.scrape_seconds
        except ValueError:
            raise ValueError(
                f"LLMOPS_SCRAPE_INTERVAL={chosen.scrape_interval!r}: the monitors' scrape interval, a"
                " Prometheus duration above 0 like 15s, 1m30s or 500ms"
            ) from None
        return chosen


@dataclass(frozen=True)
class ServedVersion:
    """One version the plan serves: which, in what role, with what share of the traffic."""

    model: str
    version: str
    role: Role
    weight: int
    deployment: str
    # A canary's fewest replicas; None: one. A canary about to take all the traffic needs as many as
    # the stable version (`stable_replicas`), so that capacity never drops (see canary.traffic).
    replicas: int | None = None
    # vLLM's --quantization for this version (versions.quantization: from its manifest, else the spec).
    quantization: str | None = None


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter resolved to a registered version.

    `path`: the adapter's sub-folder inside the version (the manifest's `content.adapter`, such as
    "adapter" for what a lora TrainingJob registers); "" when the adapter is the version's root.
    """

    name: str
    model: str
    version: str
    path: str = ""

    def folder(self) -> str:
        """Where vLLM finds it in the pod: the version is fetched into adapters/<name>/."""
        root = engine.adapter_dir(self.name)
        return f"{root}/{self.path.strip('/')}" if self.path.strip("/") else root


@dataclass(frozen=True)
class Plan:
    """The served versions and adapters. `resuming`: the first reconcile after spec.suspend was lifted
    (the status still says Suspended): autoscaled versions get their floor of replicas written once
    (vllm.py), since a Deployment left at 0 would stay there (the apply hands a left-out count over
    as it is, and an HPA whose target is at 0 is deactivated). `draining`: spec.suspend, but the
    gateway has not drained yet (`drain_wait`): the model servers and their autoscalers stay as they
    are meanwhile. `existing`: the names of the versions' Deployments that exist in the cluster, of
    those created at a count of their own (autoscaling.writes_start_count); such a Deployment not
    among them is created at its autoscaler's start count (vllm.py), one among them leaves `replicas`
    to its autoscaler."""

    versions: tuple[ServedVersion, ...]
    adapters: tuple[Adapter, ...] = ()
    resuming: bool = False
    draining: bool = False
    existing: frozenset[str] = frozenset()

    def role(self, role: Role) -> ServedVersion | None:
        return next((v for v in self.versions if v.role == role), None)


def stable_replicas(spec: ModelDeploymentSpec) -> int:
    """The ready replicas the spec asks of the stable version, which traffic never goes below."""
    return max(spec.autoscaling.min_replicas, 1)


def drain_wait(
    *,
    since: dt.datetime | None,
    now: dt.datetime,
    limit: float,
    at_zero: bool,
    gateway_suspended: float | None,
    inflight: float | None,
) -> str | None:
    """Whether a suspended deployment's model servers must wait before going to 0 replicas: None when
    they may go, else what they wait for.

    They go once they are at 0 already (never back up while suspended), once `limit` seconds have
    passed `since` the suspend (the `Suspended` condition's lastTransitionTime; None: this is its first
    reconcile), or once Prometheus says that every gateway pod has taken the suspend
    (`min(llmops_gateway_suspended)` is 1: it refuses new requests) and no request is at a replica
    (`sum(llmops_gateway_inflight_requests)` is 0 or absent). `gateway_suspended` None: Prometheus did
    not answer or has no such series (no gateway monitor): only the limit lets them go."""
    if at_zero or limit <= 0:
        return None
    if since is not None and (now - since).total_seconds() >= limit:
        return None
    if gateway_suspended == 1 and not inflight:
        return None
    if gateway_suspended is None:
        why = "the gateway's llmops_gateway_suspended is not in Prometheus"
    elif gateway_suspended < 1:
        why = "a gateway pod has not taken the suspend yet (its mounted config updates within a minute)"
    else:
        why = f"{inflight:g} request(s) in flight at the gateway"
    start = since or now
    deadline = (start + dt.timedelta(seconds=limit)).replace(microsecond=0).isoformat()
    return f"{why}; the model servers go to 0 when it is done, or at {deadline} at the latest"


def drain_left(*, since: dt.datetime | None, now: dt.datetime, limit: float) -> float:
    """Seconds until the model servers of a suspend go to 0 at the latest (`drain_wait`'s time limit,
    `limit` seconds from `since`; None: this is the suspend's first reconcile, the whole limit left),
    never below 0: a clock the reconcile keeps beside its paced poll of the gateway's gauges."""
    elapsed = (now - since).total_seconds() if since is not None else 0.0
    return max(limit - elapsed, 0.0)


def retiring_version(
    status: ModelDeploymentStatus, stable: ServedVersion, canary_v: ServedVersion | None
) -> ServedVersion | None:
    """The version that served before the stable one changed, kept until its successor is ready.

    Only one that had ready replicas, and never the new stable or canary itself."""
    by_role = {v.role: v for v in status.versions}
    old = by_role.get("previous") or by_role.get("stable")
    if old is None or not old.deployment or old.ready_replicas == 0:
        return None
    if old.deployment in {stable.deployment, canary_v.deployment if canary_v else None}:
        return None
    return ServedVersion(old.name, old.version, "previous", 0, old.deployment)
