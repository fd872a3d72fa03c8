"""The usage report of a ModelDeployment: what it used, how busy it was, and how to size it.

`llmops report usage` (llmops/audit_cli.py) and the dashboard's "Usage and right-sizing" row
(monitoring.py) read the same series with the same PromQL, `queries` here:

    report = collect(Prometheus(url), spec, namespace="team-a", name="chat", start=t0, end=t1,
                     compressed=compressed_versions(store, spec, seen_versions))
    print(render_markdown(report))

Series (selected by `namespace` and `model_deployment`, the labels the operator's monitors give
them; `sel` below):

- replicas, a gauge per version: the gateway's ready replicas, or, where the gateway is not scraped,
  the vLLM pods scraped: `max by (version) (llmops_gateway_ready_replicas{sel})
  or count by (version) (vllm:num_requests_running{sel})`;
- running, waiting: requests in vLLM's running batches and in its queues (the autoscaler's `queue`
  signal): `sum(vllm:num_requests_running{sel})`, `sum(vllm:num_requests_waiting{sel})`;
- kv_cache, a gauge per pod, 0-1: `vllm:kv_cache_usage_perc{sel} or vllm:gpu_cache_usage_perc{sel}`
  (vLLM renamed the second to the first);
- prompt and generation tokens, counters per pod: `vllm:prompt_tokens_total{sel}`,
  `vllm:generation_tokens_total{sel}`; the gateway's `llmops_gateway_{prompt,completion}_tokens_total`
  only when vLLM's are absent;
- preemptions, a counter per pod (requests vLLM evicted for want of KV cache):
  `vllm:num_preemptions_total{sel}`;
- latency, request to last byte at the gateway: `llmops_gateway_request_duration_seconds_bucket{sel}`.

The window is a `Grid` (llmops/operators/prometheus.py: at most MAX_POINTS evaluations a whole
number of seconds apart, the last at `end`). A gauge's value in step i is the sample Prometheus has in
effect at the step's end (its lookback, 5 minutes): with a step longer than the scrape interval, gauges
are sampled, so shares of time are estimates to within one step each. Counters are read raw and their
rises summed (`prometheus.counters`, `increments`: restarts and series born in the window counted).

Figures (`Usage`), each over the window's steps, `dt` = the step in seconds, R(i) = replicas in step i
summed over versions, G = `spec.resources.gpus` (GPUs per replica):

- replica-seconds = sum_i R(i) * dt; `replica_hours` = that / 3600.
- `gpu_hours` = replica-hours * G (0 without GPUs: the report shows replica-hours beside it).
- tokens = the rise of prompt + generation tokens (vLLM's; the gateway's when vLLM is not scraped,
  `tokens_source` says which).
- `tokens_per_gpu_second` = tokens / (gpu_hours * 3600); None without GPUs or replica time.
  `tokens_per_replica_second` = tokens / replica-seconds.
- `kv_cache_mean`: the mean, over steps with replicas, of the pods' mean KV-cache use (0-1);
  `kv_cache_peak`: the highest any pod showed.
- `running_per_replica_mean`: mean over steps with replicas of running(i) / R(i);
  `busy_share`: the share of those steps with a request running or waiting;
  `concurrency_utilisation` = running_per_replica_mean / `--max-num-seqs` when engine.extraArgs sets it
  (vLLM's default depends on the device and version, so it is not guessed).
- autoscaler signals (`Signal`, one per signal the autoscaler scales on, autoscaling.targets): per
  replica value v(i) = waiting(i) / R(i) (`queue`) or sum of KV-cache use / R(i) (`kvCache`), what
  KEDA's and the HPA's AverageValue targets compare; a step is above when v > target * 1.1, below
  when v < target * 0.9, within otherwise (0.1 is the HPA's default tolerance, inside which it does
  not scale: kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale "Algorithm details").
  Only steps with replicas count; `seconds_at_max` / `seconds_at_min`: steps at the replica bounds.
- `latency_p95_ms`: Prometheus' `histogram_quantile(0.95)` over the window's bucket increases.

Recommendation (`Recommendation`), each rule stated in its `notes`:
- needed(i) = max over the autoscaler's signals of ceil(total signal(i) / target) (the HPA's
  desiredReplicas = ceil(metric total / target average value)), at least 1 in a step with a request
  running or waiting; over the steps with replicas. `max_replicas` = max(1, min_replicas, the p95 of
  needed) (nearest rank); `min_replicas` = 0 with scaleToZero, else max(1, the p5 of needed).
- `gpu_memory_utilization` (GPUs only): raised by 0.05 (at most 0.95) when vLLM preempted requests or
  a pod's KV cache reached 90%; left as is, with a note that the KV cache had room, when its peak stayed
  below 50%; None when it should not change. Without GPUs: not applicable (vLLM on the CPU sizes its
  KV cache from VLLM_CPU_KVCACHE_SPACE).
- `compressed`: "name:version" of each registered version whose manifest's lineage names a served
  version (spec.model or the canary's model, at a version seen in the window) as its `parent` and
  whose gates all passed (and that has gates): serving it instead may need fewer GPUs.

Errors: `UsageError` with one line naming what is missing (Prometheus unreachable or refusing a query,
no series of the deployment in the window); ValueError for a name that is not a Kubernetes name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators.modeldeployment.autoscaling import targets
from llmops.operators.prometheus import (
    MAX_POINTS,
    Grid,
    Prometheus,
    PrometheusError,
    Series,
    counters,
    histogram_quantile,
    increments,
)
from llmops.registry import RegistryError, models, read_version, versions
from llmops.storage import ObjectStore

TOLERANCE = 0.1  # the HPA's default --horizontal-pod-autoscaler-tolerance
RAISE_KV_PEAK, ROOM_KV_PEAK = 0.9, 0.5
GPU_MEMORY_STEP, GPU_MEMORY_CEILING = 0.05, 0.95
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class UsageError(RuntimeError):
    """No report: Prometheus could not be read, or holds nothing of the deployment; one line says what."""


def selector(namespace: str, name: str) -> str:
    """`{namespace="..",model_deployment=".."}`; ValueError naming the field for a bad name."""
    if not _DNS_LABEL.match(namespace):
        raise ValueError(f"namespace: {namespace!r} is not a Kubernetes namespace name")
    if not _DNS_SUBDOMAIN.match(name):
        raise ValueError(f"deployment: {name!r} is not a Kubernetes object name")
    return f'{{namespace="{namespace}",model_deployment="{name}"}}'


@dataclass(frozen=True)
class Queries:
    """The PromQL of the report and the dashboard's usage row for one selector (module docstring)."""

    replicas: str
    running: str
    waiting: str
    kv_cache: str
    prompt_tokens: str
    generation_tokens: str
    gateway_prompt_tokens: str
    gateway_completion_tokens: str
    preemptions: str
    latency_buckets: str


def queries(sel: str) -> Queries:
    """The queries for the label matchers `sel` (`selector`, or monitoring.selector: the same string)."""
    return Queries(
        replicas=f"max by (version) (llmops_gateway_ready_replicas{sel})"
        f" or count by (version) (vllm:num_requests_running{sel})",
        running=f"sum(vllm:num_requests_running{sel})",
        waiting=f"sum(vllm:num_requests_waiting{sel})",
        kv_cache=f"vllm:kv_cache_usage_perc{sel} or vllm:gpu_cache_usage_perc{sel}",
        prompt_tokens=f"vllm:prompt_tokens_total{sel}",
        generation_tokens=f"vllm:generation_tokens_total{sel}",
        gateway_prompt_tokens=f"llmops_gateway_prompt_tokens_total{sel}",
        gateway_completion_tokens=f"llmops_gateway_completion_tokens_total{sel}",
        preemptions=f"vllm:num_preemptions_total{sel}",
        latency_buckets=f"llmops_gateway_request_duration_seconds_bucket{sel}",
    )


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Signal(_Model):
    """One signal the autoscaler scales on, against its per-replica target (module docstring)."""

    name: Literal["queue", "kvCache"]
    target: float
    peak_per_replica: float | None
    mean_per_replica: float | None
    seconds_above: float
    seconds_within: float
    seconds_below: float
    share_above: float | None = Field(description="seconds_above over the seconds with replicas.")
    share_below: float | None


class Recommendation(_Model):
    min_replicas: int
    max_replicas: int
    needed_p95: int | None = Field(description="The p95 of the replicas the signals needed (nearest rank).")
    needed_peak: int | None
    gpu_memory_utilization: float | None = Field(description="The value to set; None: leave it.")
    compressed: list[str] = Field(
        default_factory=list, description="name:version of gated compressed versions."
    )
    notes: list[str] = Field(default_factory=list, description="Each rule as it applied.")


class Usage(_Model):
    """The report (JSON, camelCase). Times in UTC; see the module docstring for every figure."""

    namespace: str
    deployment: str
    model: str
    source: str
    start: datetime
    end: datetime
    step_seconds: int
    versions: list[str] = Field(description="Versions with replicas in the window.")
    gpus_per_replica: int
    replica_hours: float
    gpu_hours: float
    replicas_mean: float
    replicas_peak: int
    prompt_tokens: int
    generation_tokens: int
    tokens_source: Literal["vllm", "gateway", "none"]
    tokens_per_gpu_second: float | None
    tokens_per_replica_second: float | None
    kv_cache_mean: float | None
    kv_cache_peak: float | None
    running_per_replica_mean: float | None
    busy_share: float | None
    max_num_seqs: int | None
    concurrency_utilisation: float | None
    preemptions: int
    latency_p95_ms: float | None
    autoscaled: bool
    min_replicas: int
    max_replicas: int
    scale_to_zero: bool
    signals: list[Signal]
    seconds_at_max: float
    seconds_at_min: float
    recommendation: Recommendation


# Folding ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the range queries returned (`queries`), over `grid`."""

    grid: Grid
    replicas: list[Series]
    running: list[Series]
    waiting: list[Series]
    kv_cache: list[Series]
    prompt_tokens: list[Series]
    generation_tokens: list[Series]
    gateway_prompt_tokens: list[Series]
    gateway_completion_tokens: list[Series]
    preemptions: list[Series]
    latency_buckets: list[Series]


def _steps(series: Iterable[Series], grid: Grid) -> list[list[float]]:
    """Each step's values, one per series that has a sample there."""
    out: list[list[float]] = [[] for _ in range(grid.n)]
    for s in series:
        for t, v in s.points:
            i = grid.index(t)
            if i is not None:
                out[i].append(v)
    return out


def _rises(series: Iterable[Series], grid: Grid) -> float:
    return sum(sum(increments(s, grid)) for s in series)


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The q-quantile by the nearest-rank method (the smallest value with at least q of them at or
    below it); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9)  # 2.0000000001 from float sums is 2


def max_num_seqs(spec: ModelDeploymentSpec) -> int | None:
    """`--max-num-seqs` from engine.extraArgs (`--max-num-seqs N` or `--max-num-seqs=N`), else None."""
    args = spec.engine.extra_args
    for i, arg in enumerate(args):
        value = None
        if arg.startswith("--max-num-seqs="):
            value = arg.split("=", 1)[1]
        elif arg == "--max-num-seqs" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None and value.isdigit():
            return int(value)
    return None


def fold(
    spec: ModelDeploymentSpec,
    facts: Facts,
    *,
    namespace: str,
    name: str,
    source: str,
    compressed: Sequence[str] = (),
) -> Usage:
    """The report from the facts (no I/O). UsageError when the window holds no replicas and no vLLM
    series of the deployment."""
    grid, n, dt = facts.grid, facts.grid.n, facts.grid.step
    per_version = _steps(facts.replicas, grid)
    replicas = [sum(v) for v in per_version]
    seen = sorted({s.labels.get("version", "") for s in facts.replicas if s.points} - {""})
    if not any(replicas) and not any(s.points for s in facts.running + facts.kv_cache):
        raise UsageError(
            f"no series of ModelDeployment {namespace}/{name} in Prometheus at {source} from"
            f" {grid.start.isoformat()} to {grid.end.isoformat()}: neither llmops_gateway_ready_replicas"
            " nor vllm:num_requests_running (is it scraped? spec.monitoring.serviceMonitor, or autoscaling)"
        )
    running = [sum(v) for v in _steps(facts.running, grid)]
    waiting = [sum(v) for v in _steps(facts.waiting, grid)]
    kv_steps = _steps(facts.kv_cache, grid)
    up = [i for i in range(n) if replicas[i] > 0]

    replica_seconds = sum(replicas) * dt
    gpus = spec.resources.gpus
    gpu_seconds = replica_seconds * gpus
    vllm_tokens = facts.prompt_tokens or facts.generation_tokens
    gateway_tokens = facts.gateway_prompt_tokens or facts.gateway_completion_tokens
    if vllm_tokens:
        source_of_tokens: Literal["vllm", "gateway", "none"] = "vllm"
        prompt, generation = _rises(facts.prompt_tokens, grid), _rises(facts.generation_tokens, grid)
    elif gateway_tokens:
        source_of_tokens = "gateway"
        prompt = _rises(facts.gateway_prompt_tokens, grid)
        generation = _rises(facts.gateway_completion_tokens, grid)
    else:
        source_of_tokens, prompt, generation = "none", 0.0, 0.0
    tokens = prompt + generation

    kv_means = [sum(kv_steps[i]) / len(kv_steps[i]) for i in up if kv_steps[i]]
    kv_all = [v for step in kv_steps for v in step]
    per_replica_running = [running[i] / replicas[i] for i in up]
    running_mean = sum(per_replica_running) / len(up) if up else None
    seqs = max_num_seqs(spec)

    a = spec.autoscaling
    queue_target, kv_target = targets(spec)
    signals: list[Signal] = []
    needed = [1 if running[i] + waiting[i] > 0 else 0 for i in up]
    for signal_name, target, totals in (
        ("queue", queue_target, waiting),
        ("kvCache", kv_target, [sum(v) for v in kv_steps]),
    ):
        if target is None:
            continue
        values = [totals[i] / replicas[i] for i in up]
        above = sum(v > target * (1 + TOLERANCE) for v in values)
        below = sum(v < target * (1 - TOLERANCE) for v in values)
        signals.append(
            Signal(
                name=signal_name,  # type: ignore[arg-type]
                target=target,
                peak_per_replica=max(values) if values else None,
                mean_per_replica=sum(values) / len(values) if values else None,
                seconds_above=above * dt,
                seconds_within=(len(values) - above - below) * dt,
                seconds_below=below * dt,
                share_above=above / len(values) if values else None,
                share_below=below / len(values) if values else None,
            )
        )
        needed = [max(k, _ceil(totals[i] / target)) for k, i in zip(needed, up, strict=True)]

    buckets: dict[float, float] = {}
    for s in facts.latency_buckets:
        le = s.labels.get("le")
        if le:
            buckets[float(le)] = buckets.get(float(le), 0.0) + sum(increments(s, grid))
    p95 = histogram_quantile(0.95, list(buckets.items()))
    preemptions = round(_rises(facts.preemptions, grid))
    kv_peak = max(kv_all) if kv_all else None

    recommendation = recommend(
        spec,
        needed=needed,
        kv_peak=kv_peak,
        preemptions=preemptions,
        busy=any(running[i] + waiting[i] > 0 for i in up),
        compressed=compressed,
    )
    return Usage(
        namespace=namespace,
        deployment=name,
        model=spec.model.name,
        source=source,
        start=grid.start,
        end=grid.end,
        step_seconds=dt,
        versions=seen,
        gpus_per_replica=gpus,
        replica_hours=replica_seconds / 3600,
        gpu_hours=gpu_seconds / 3600,
        replicas_mean=sum(replicas) / n,
        replicas_peak=round(max(replicas, default=0)),
        prompt_tokens=round(prompt),
        generation_tokens=round(generation),
        tokens_source=source_of_tokens,
        tokens_per_gpu_second=tokens / gpu_seconds if gpu_seconds else None,
        tokens_per_replica_second=tokens / replica_seconds if replica_seconds else None,
        kv_cache_mean=sum(kv_means) / len(kv_means) if kv_means else None,
        kv_cache_peak=kv_peak,
        running_per_replica_mean=running_mean,
        busy_share=sum(running[i] + waiting[i] > 0 for i in up) / len(up) if up else None,
        max_num_seqs=seqs,
        concurrency_utilisation=running_mean / seqs if seqs and running_mean is not None else None,
        preemptions=preemptions,
        latency_p95_ms=None if p95 is None else round(p95 * 1000, 3),
        autoscaled=a.scale_to_zero or a.min_replicas < a.max_replicas,
        min_replicas=a.min_replicas,
        max_replicas=a.max_replicas,
        scale_to_zero=a.scale_to_zero,
        signals=signals,
        seconds_at_max=sum(replicas[i] >= a.max_replicas for i in up) * dt,
        seconds_at_min=sum(replicas[i] <= max(a.min_replicas, 1) for i in up) * dt,
        recommendation=recommendation,
    )


def recommend(
    spec: ModelDeploymentSpec,
    *,
    needed: Sequence[int],
    kv_peak: float | None,
    preemptions: int,
    busy: bool,
    compressed: Sequence[str] = (),
) -> Recommendation:
    """The rules of the module docstring, each applied one written in `notes`."""
    a, notes = spec.autoscaling, []
    p95, p05 = nearest_rank(needed, 0.95), nearest_rank(needed, 0.05)
    low = 0 if a.scale_to_zero else max(1, int(p05 or 0))
    high = max(1, low, int(p95 or 0))
    if needed:
        notes.append(
            f"replicas: the autoscaler's signals needed p95 {int(p95 or 0)}, peak {max(needed)}"
            f" (ceil(signal total / target) per step, at least 1 while a request ran or waited):"
            f" minReplicas {low}, maxReplicas {high} (now {a.min_replicas}-{a.max_replicas})"
            + (" (scaleToZero keeps minReplicas 0)" if a.scale_to_zero else "")
        )
    else:
        notes.append(
            f"replicas: no step with replicas in the window; keeping minReplicas {low}, maxReplicas {high}"
        )
    gmu = None
    current = spec.engine.gpu_memory_utilization
    if spec.resources.gpus == 0:
        notes.append(
            "gpuMemoryUtilization: not applicable without GPUs (vLLM on the CPU sizes its KV cache from"
            " VLLM_CPU_KVCACHE_SPACE)"
        )
    elif preemptions > 0 or (kv_peak is not None and kv_peak >= RAISE_KV_PEAK):
        gmu = round(min(GPU_MEMORY_CEILING, current + GPU_MEMORY_STEP), 2)
        why = f"vLLM preempted {preemptions} requests" if preemptions else f"KV cache peaked at {kv_peak:.0%}"
        notes.append(
            f"gpuMemoryUtilization: {why}: raise it from {current:g} to {gmu:g} (or add replicas)"
            if gmu > current
            else f"gpuMemoryUtilization: {why} at {current:g} already: add replicas"
        )
        if gmu <= current:
            gmu = None
    elif kv_peak is not None and busy and kv_peak < ROOM_KV_PEAK:
        notes.append(
            f"gpuMemoryUtilization: the KV cache never held more than {kv_peak:.0%}: {current:g} leaves"
            " room (lower it to share the GPU, or serve longer contexts)"
        )
    else:
        notes.append(f"gpuMemoryUtilization: keep {current:g}")
    if compressed:
        notes.append("a compressed version of this model passed its gates: " + ", ".join(compressed))
    return Recommendation(
        min_replicas=low,
        max_replicas=high,
        needed_p95=None if p95 is None else int(p95),
        needed_peak=max(needed) if needed else None,
        gpu_memory_utilization=gmu,
        compressed=list(compressed),
        notes=notes,
    )


# Reading ---------------------------------------------------------------------------------------


def _utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{field} must carry a time zone (UTC), got {value.isoformat()}")
    return value.astimezone(UTC)


def read(
    prometheus: Prometheus, sel: str, start: datetime, end: datetime, max_points: int = MAX_POINTS
) -> Facts:
    """The range queries of `queries(sel)` over the window (ten queries). UsageError naming
    Prometheus when it cannot be reached or refuses a query."""
    grid = Grid.over(start, end, max_points)
    q = queries(sel)

    def gauge(promql: str) -> list[Series]:
        return prometheus.query_range(promql, grid.start, grid.end, grid.step)

    try:
        return Facts(
            grid=grid,
            replicas=gauge(q.replicas),
            running=gauge(q.running),
            waiting=gauge(q.waiting),
            kv_cache=gauge(q.kv_cache),
            prompt_tokens=counters(prometheus, q.prompt_tokens, grid),
            generation_tokens=counters(prometheus, q.generation_tokens, grid),
            gateway_prompt_tokens=counters(prometheus, q.gateway_prompt_tokens, grid),
            gateway_completion_tokens=counters(prometheus, q.gateway_completion_tokens, grid),
            preemptions=counters(prometheus, q.preemptions, grid),
            latency_buckets=counters(prometheus, q.latency_buckets, grid),
        )
    except PrometheusError as e:
        raise UsageError(f"Prometheus at {prometheus.url} refused a query: {e}") from None
    except OSError as e:  # urllib.error.URLError, a timeout, a refused connection
        why = getattr(e, "reason", None) or e
        raise UsageError(f"Prometheus at {prometheus.url} could not be reached: {why}") from None


def collect(
    prometheus: Prometheus,
    spec: ModelDeploymentSpec,
    *,
    namespace: str,
    name: str,
    start: datetime,
    end: datetime,
    store: ObjectStore | None = None,
    max_points: int = MAX_POINTS,
) -> Usage:
    """Read the window from Prometheus and fold it; with `store` (the registry), look for gated
    compressed versions of the versions seen (`compressed_versions`). Errors: UsageError (one line),
    ValueError for bad names or a window that ends before it starts."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        raise ValueError(f"end ({end.isoformat()}) is not after start ({start.isoformat()})")
    facts = read(prometheus, selector(namespace, name), start, end, max_points)
    seen = sorted({s.labels.get("version", "") for s in facts.replicas if s.points} - {""})
    compressed = compressed_versions(store, spec, seen) if store is not None else []
    return fold(spec, facts, namespace=namespace, name=name, source=prometheus.url, compressed=compressed)


def parent_of(manifest: object) -> str | None:
    """The manifest's `lineage.parent` ("name:version"), whether the registry's Lineage declares the
    field or keeps it as an extra key."""
    lineage = getattr(manifest, "lineage", None)
    parent = getattr(lineage, "parent", None)
    if parent is None and lineage is not None:
        parent = (getattr(lineage, "model_extra", None) or {}).get("parent")
    return parent if isinstance(parent, str) else None


def compressed_versions(store: ObjectStore, spec: ModelDeploymentSpec, served: Sequence[str]) -> list[str]:
    """ "name:version" of every registered version (any model of the registry) whose lineage's parent
    is one of `served` of spec.model's name or the canary's, and whose gates (at least one) all
    passed. Reads every manifest of the registry (one listing, then one read per version); a manifest
    that cannot be read is skipped. Storage errors of the listing propagate."""
    names = {spec.model.name}
    if spec.rollout is not None and spec.rollout.canary is not None:
        names.add(spec.rollout.canary.model.name)
    parents = {f"{n}:{v}" for n in names for v in served}
    found = []
    for model in models(store):
        for version in versions(store, model):
            try:
                manifest = read_version(store, model, version)
            except RegistryError:
                continue
            if parent_of(manifest) in parents and manifest.gates and manifest.gates_passed:
                found.append(f"{model}:{version}")
    return found


# Words -----------------------------------------------------------------------------------------


def _number(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}g}"


def _share(v: float | None) -> str:
    return "" if v is None else f"{v:.1%}"


def summary(report: Usage) -> str:
    """One line: hours, tokens, utilisation, the recommended bounds."""
    hours = (
        f"{report.gpu_hours:.3g} GPU-hours"
        if report.gpus_per_replica
        else f"0 GPU-hours (CPU; {report.replica_hours:.3g} replica-hours)"
    )
    tokens = report.prompt_tokens + report.generation_tokens
    r = report.recommendation
    return (
        f"{report.namespace}/{report.deployment}: {hours}, {tokens} tokens, KV cache peak"
        f" {_share(report.kv_cache_peak) or 'n/a'}; recommended replicas {r.min_replicas}-{r.max_replicas}"
        f" (now {report.min_replicas}-{report.max_replicas})"
    )


def render_markdown(report: Usage) -> str:
    """The report for people: the summary, usage, utilisation, the autoscaler, the recommendation."""

    def table(rows: Iterable[tuple[str, object]]) -> list[str]:
        return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]

    when = "%Y-%m-%d %H:%M:%S UTC"
    out = [f"# Usage: {report.namespace}/{report.deployment}", "", f"> {summary(report)}", ""]
    out += table(
        [
            ("Model", f"{report.model}, versions seen: {', '.join(report.versions) or 'none'}"),
            ("Window", f"{report.start.strftime(when)} to {report.end.strftime(when)}"),
            ("Source", f"Prometheus at {report.source}, one point every {report.step_seconds} s"),
        ]
    )
    out += ["## Usage", ""]
    out += table(
        [
            ("GPU-hours", f"{report.gpu_hours:.4g} ({report.gpus_per_replica} per replica)"),
            ("Replica-hours", f"{report.replica_hours:.4g}"),
            ("Replicas (mean, peak)", f"{report.replicas_mean:.3g}, {report.replicas_peak}"),
            ("Prompt tokens", report.prompt_tokens),
            ("Generation tokens", report.generation_tokens),
            ("Tokens counted by", report.tokens_source),
            ("Tokens per GPU-second", _number(report.tokens_per_gpu_second) or "n/a (no GPUs)"),
            ("Tokens per replica-second", _number(report.tokens_per_replica_second)),
            (
                "Latency p95 (gateway)",
                f"{_number(report.latency_p95_ms)} ms" if report.latency_p95_ms is not None else "n/a",
            ),
        ]
    )
    out += ["## Utilisation", ""]
    out += table(
        [
            ("KV-cache use (mean, peak)", f"{_share(report.kv_cache_mean)}, {_share(report.kv_cache_peak)}"),
            ("Running requests per replica (mean)", _number(report.running_per_replica_mean)),
            ("Share of time busy", _share(report.busy_share)),
            (
                "Running / --max-num-seqs",
                _share(report.concurrency_utilisation) if report.max_num_seqs else "n/a (not set)",
            ),
            ("Preemptions", report.preemptions),
        ]
    )
    out += ["## Autoscaler", ""]
    bounds = f"{report.min_replicas}-{report.max_replicas}" + (
        ", scale to zero" if report.scale_to_zero else ""
    )
    out += [
        f"Replicas {bounds}; {'autoscaled' if report.autoscaled else 'not autoscaled (fixed replicas)'};"
        f" {report.seconds_at_max:g} s at the maximum, {report.seconds_at_min:g} s at the minimum.",
        "",
    ]
    if report.signals:
        out += [
            "| Signal | Target per replica | Mean | Peak | Above (s) | Within (s) | Below (s) | Above"
            " | Below |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {s.name} | {s.target:g} | {_number(s.mean_per_replica)} | {_number(s.peak_per_replica)}"
            f" | {s.seconds_above:g} | {s.seconds_within:g} | {s.seconds_below:g} | {_share(s.share_above)}"
            f" | {_share(s.share_below)} |"
            for s in report.signals
        ]
        out += [""]
    r = report.recommendation
    out += ["## Recommendation", ""]
    out += table(
        [
            ("minReplicas", r.min_replicas),
            ("maxReplicas", r.max_replicas),
            (
                "gpuMemoryUtilization",
                f"{r.gpu_memory_utilization:g}" if r.gpu_memory_utilization is not None else "unchanged",
            ),
            ("Compressed versions that passed their gates", ", ".join(r.compressed) or "none"),
        ]
    )
    out += [f"- {note}" for note in r.notes]
    return "\n".join(out).rstrip("\n") + "\n"
