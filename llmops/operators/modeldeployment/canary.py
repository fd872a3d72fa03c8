"""Canary releases: the analysis (pure), the step machine (pure), and where the samples come from.

The machine's state is `status.canary` (llmops.api.modeldeployment.CanaryStatus); `advance()` takes
it, the canary's readiness and the clock, and returns the next state, the canary's traffic weight
and at most one Event. It never sleeps or polls: it says when it wants to be asked again
(`requeue_after`), and the runtime reconciles the object then.

    weights = [canary.weight, *canary.steps]          e.g. [10, 25, 50, 100]

    (new canary version or new baseline) -> Analysing, step 0, clock stopped
    Analysing, canary not ready          -> weight 0, clock stopped (a step is judged on traffic
                                            the canary really got)
    Analysing, ready, clock stopped      -> clock starts; weight = weights[step]
    Analysing, window not over           -> wait (requeue when it is)
    Analysing, window over               -> analyse the window:
        inconclusive (no canary traffic)  -> same step, clock restarts
        pass, not the last step           -> step + 1, clock restarts              Event CanaryProgressed
        pass, last step                   -> Promoted: the canary is the stable    Event Promoted
        fail, autoRollback                -> RolledBack: weight 0, canary removed  Warning RolledBack
        fail, no autoRollback             -> Halted: weight held                   Warning AnalysisFailed
    Promoted / RolledBack / Halted        -> stay, until the canary or stable version changes

    spec.suspend (`frozen`)               -> the state as it is: no analysis, no Event, no clock;
                                            resumed, the canary is not ready at first, so its step's
                                            clock restarts once it is (the row above)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from llmops.api.modeldeployment import Canary, CanaryAnalysis, CanaryStatus
from llmops.operators.modeldeployment import monitoring
from llmops.operators.modeldeployment.plan import ServedVersion
from llmops.operators.prometheus import Prometheus

# -- samples and their source ------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One version's traffic over an analysis window, as the gateway saw it."""

    requests: float
    errors: float
    p95_latency_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


class MetricsSource(Protocol):
    """Where analysis samples come from (Prometheus in clusters)."""

    def sample(self, namespace: str, name: str, version: str, window_seconds: int) -> Sample | None: ...


class PrometheusSource:
    """Samples from Prometheus' HTTP API (`/api/v1/query`) over the gateway's series."""

    def __init__(self, url: str, timeout: float = 10) -> None:
        self.prometheus = Prometheus(url, timeout)

    def queries(self, namespace: str, name: str, version: str, window_seconds: int) -> dict[str, str]:
        sel = monitoring.selector(namespace, name, f'version="{version}"')
        errors = monitoring.selector(
            namespace, name, f'version="{version}"', f'code=~"{monitoring.ERROR_CODES}"'
        )
        w = f"{window_seconds}s"
        return {
            "requests": f"sum(increase({monitoring.REQUESTS}{sel}[{w}]))",
            "errors": f"sum(increase({monitoring.REQUESTS}{errors}[{w}])) or vector(0)",
            "p95": f"histogram_quantile(0.95, sum by (le) (rate({monitoring.LATENCY}_bucket{sel}[{w}])))",
        }

    def query(self, promql: str) -> float | None:
        return self.prometheus.query(promql)

    def sample(self, namespace: str, name: str, version: str, window_seconds: int) -> Sample | None:
        q = self.queries(namespace, name, version, window_seconds)
        requests = self.query(q["requests"])
        if requests is None:
            return None
        p95 = self.query(q["p95"])
        return Sample(
            requests=requests,
            errors=self.query(q["errors"]) or 0.0,
            p95_latency_ms=None if p95 is None else p95 * 1000,
        )


# -- the analysis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    verdict: Literal["pass", "fail", "inconclusive"]
    message: str
    error_rate: float | None = None
    p95_latency_ms: float | None = None
    latency_ratio: float | None = None


def analyse(rules: CanaryAnalysis, canary: Sample | None, stable: Sample | None) -> Analysis:
    """Judge the canary's window against the thresholds, and its latency against the stable's."""
    if canary is None or canary.requests <= 0:
        return Analysis("inconclusive", "no requests reached the canary in the window")
    rate, p95 = canary.error_rate, canary.p95_latency_ms
    ratio = None
    if p95 is not None and stable is not None and stable.p95_latency_ms:
        ratio = p95 / stable.p95_latency_ms
    failures = []
    if rules.max_error_rate is not None and rate is not None and rate > rules.max_error_rate:
        failures.append(f"error rate {rate:.4g} > {rules.max_error_rate:g}")
    if rules.max_p95_latency_ms is not None and p95 is not None and p95 > rules.max_p95_latency_ms:
        failures.append(f"p95 latency {p95:.0f} ms > {rules.max_p95_latency_ms} ms")
    if rules.max_latency_ratio is not None and ratio is not None and ratio > rules.max_latency_ratio:
        failures.append(
            f"p95 latency ratio to stable {ratio:.3g} > {rules.max_latency_ratio:g}"
            f" ({p95:.0f} ms vs {stable.p95_latency_ms:.0f} ms)"  # type: ignore[union-attr]
        )
    measured = f"{canary.requests:.0f} requests, error rate {rate:.4g}" + (
        f", p95 {p95:.0f} ms" if p95 is not None else ""
    )
    if failures:
        return Analysis("fail", "; ".join(failures), rate, p95, ratio)
    return Analysis("pass", measured, rate, p95, ratio)


# -- the machine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Step:
    status: CanaryStatus
    weight: int  # the canary's traffic share now
    serve_canary: bool  # keep the canary's Deployment
    promoted: bool  # the canary has become the stable version
    event: Event | None = None
    requeue_after: float | None = None


def weights(canary: Canary) -> list[int]:
    return [canary.weight, *canary.steps]


# Prometheus needs two samples in a window to compute increase() or rate(); four scrape intervals leave
# room for a missed scrape (the rule behind Grafana's $__rate_interval).
SCRAPES_PER_WINDOW = 4
# An analysis without a verdict this many times in a row is reported (Ready's reason).
INCONCLUSIVE_AFTER = 3


def analysis_window(scrape_interval_seconds: float) -> int:
    """The shortest analysis window, in seconds, over series scraped every `scrape_interval_seconds`."""
    return math.ceil(SCRAPES_PER_WINDOW * scrape_interval_seconds)


def advance(
    canary: Canary,
    previous: CanaryStatus | None,
    *,
    model: str,
    version: str,
    baseline: str,
    ready: bool,
    now: dt.datetime,
    analysis: Callable[[int], Analysis],
    min_window: int = 0,
) -> Step:
    """The canary's next state. `analysis(window_seconds)` is called only when a window is over.

    The window (and a step's length) is `analysis.intervalSeconds`, or `min_window` if that is longer:
    analysis_window(scrape interval), so that every window holds enough samples to give a verdict."""
    plan = weights(canary)
    interval = max(canary.analysis.interval_seconds, min_window)
    who = f"canary {model}:{version}"
    state = _current(canary, previous, model, version, baseline)
    if state.window_seconds != interval:
        state = state.model_copy(update={"window_seconds": interval})
    match state.verdict:
        case "Promoted":
            return Step(state, 100, serve_canary=True, promoted=True)
        case "RolledBack":
            return Step(state, 0, serve_canary=False, promoted=False)
        case "Halted":
            return Step(state, state.weight, serve_canary=True, promoted=False)
    if not ready:
        return Step(state.model_copy(update={"step_start_time": None}), 0, serve_canary=True, promoted=False)
    if state.step_start_time is None:
        started = state.model_copy(update={"step_start_time": _seconds(now)})
        return Step(started, state.weight, serve_canary=True, promoted=False, requeue_after=interval)
    elapsed = (now - state.step_start_time).total_seconds()
    if elapsed < interval:
        return Step(state, state.weight, serve_canary=True, promoted=False, requeue_after=interval - elapsed)

    result = analysis(interval)
    judged = state.model_copy(
        update={
            "inconclusive_analyses": 0,
            "last_analysis_time": _seconds(now),
            "error_rate": result.error_rate,
            "p95_latency_ms": result.p95_latency_ms,
            "latency_ratio": result.latency_ratio,
            "message": result.message[:256],
        }
    )
    if result.verdict == "inconclusive":
        again = judged.model_copy(
            update={
                "step_start_time": _seconds(now),
                "inconclusive_analyses": state.inconclusive_analyses + 1,
            }
        )
        return Step(again, state.weight, serve_canary=True, promoted=False, requeue_after=interval)
    if result.verdict == "pass":
        if state.step + 1 >= len(plan):
            done = judged.model_copy(update={"verdict": "Promoted", "weight": 100})
            # Record it where the spec names versions: the spec itself, or the stable's alias (a
            # RetrainPolicy moves it; editing a spec kept in Git would fight GitOps).
            record = (
                f" Move the alias spec.model follows to version {version} to record that"
                f" (llmops models alias set {model} <alias> {version}; a RetrainPolicy does it)."
                if canary.model.alias
                else " Set spec.model to it and remove rollout.canary to record that in the spec."
            )
            message = (
                f"{who} passed its last analysis ({result.message}) and is promoted: it is now the stable"
                f" version and takes all traffic; version {baseline} is removed.{record}"
            )
            return Step(done, 100, serve_canary=True, promoted=True, event=Event("Promoted", message))
        step = state.step + 1
        moved = judged.model_copy(
            update={"step": step, "weight": plan[step], "step_start_time": _seconds(now)}
        )
        message = f"{who} passed analysis ({result.message}); weight {state.weight}% -> {plan[step]}%"
        return Step(
            moved, plan[step], serve_canary=True, promoted=False,
            event=Event("CanaryProgressed", message), requeue_after=interval,
        )  # fmt: skip
    if canary.auto_rollback:
        back = judged.model_copy(update={"verdict": "RolledBack", "weight": 0})
        message = (
            f"{who} rolled back at {state.weight}%: {result.message}. Version {baseline} serves all traffic."
            " Fix the candidate and set rollout.canary.model to a new version, or remove rollout.canary."
        )
        return Step(
            back, 0, serve_canary=False, promoted=False, event=Event("RolledBack", message, warning=True)
        )
    halted = judged.model_copy(update={"verdict": "Halted"})
    message = (
        f"{who} failed analysis at {state.weight}%: {result.message}. autoRollback is off, so the weight"
        " stays; remove rollout.canary to roll back, or change it to retry."
    )
    return Step(
        halted, state.weight, serve_canary=True, promoted=False, event=Event("AnalysisFailed", message, True)
    )


def frozen(canary: Canary, previous: CanaryStatus | None, *, model: str, version: str, baseline: str) -> Step:
    """The machine held while the ModelDeployment is suspended: `previous` as it is (step, weight,
    verdict, last analysis; a canary new to it starts at step 0 with its clock stopped), with no
    analysis, no Event and nothing to wait for. A promoted canary stays promoted and a rolled-back one
    stays gone; every Deployment is at 0 replicas meanwhile (vllm.py)."""
    state = _current(canary, previous, model, version, baseline)
    verdict = state.verdict
    weight = {"Promoted": 100, "RolledBack": 0}.get(verdict, state.weight)
    return Step(state, weight, serve_canary=verdict != "RolledBack", promoted=verdict == "Promoted")


def _current(
    canary: Canary, previous: CanaryStatus | None, model: str, version: str, baseline: str
) -> CanaryStatus:
    """`previous` if it is about this canary against this baseline, else a new machine at step 0."""
    if previous is not None and (previous.model, previous.version, previous.baseline_version) == (
        model,
        version,
        baseline,
    ):
        return previous
    return CanaryStatus(
        step=0,
        weight=weights(canary)[0],
        verdict="Analysing",
        model=model,
        version=version,
        baseline_version=baseline,
    )


def _seconds(now: dt.datetime) -> dt.datetime:
    return now.replace(microsecond=0)


# -- who serves how much -----------------------------------------------------------------------


def canary_replicas(weight: int, stable: int) -> int:
    """Ready replicas a canary needs to take `weight` percent: one, or the stable version's count
    (`stable`) to take all of it, so that a canary alone never serves with less than the stable did."""
    return stable if weight >= 100 else 1


def traffic(
    stable: ServedVersion,
    candidate: ServedVersion | None,
    step: Step | None,
    retiring: ServedVersion | None,
    *,
    ready: Callable[[str], int],
    need: int = 1,
    carry: int = 0,
) -> list[ServedVersion]:
    """The versions to serve and their weights (summing to 100).

    `ready(deployment)` is its ready replica count; `need` is what the spec asks of the stable version
    (plan.stable_replicas). The rule, like a Deployment's surge: the replicas that take traffic never
    fall below `need` during a canary, a promotion or a replacement.

    - The canary gets the machine's weight once it has the replicas for it (canary_replicas), else 0.
    - Once promoted, the canary is the stable version; the version it replaces (`retiring`, the old
      stable) keeps the stable share until the new stable version has `need` ready replicas, while
      the new one keeps the weight it had as a canary (`carry`), if it has a ready replica.
    - A changed version (`retiring`, the one before) serves likewise until its successor is ready.
    """
    canary_weight = 0
    if candidate is not None and step is not None:
        if step.promoted:
            stable = dataclasses.replace(candidate, role="stable", replicas=None)
        elif step.serve_canary and ready(candidate.deployment) >= canary_replicas(step.weight, need):
            canary_weight = step.weight
    share = 100 - canary_weight
    out = []
    if retiring is not None and retiring.deployment != stable.deployment and ready(stable.deployment) < need:
        keep = min(carry, share) if ready(stable.deployment) > 0 else 0
        out += [dataclasses.replace(stable, weight=keep), dataclasses.replace(retiring, weight=share - keep)]
    else:
        out.append(dataclasses.replace(stable, weight=share))
    if candidate is not None and step is not None and step.serve_canary and not step.promoted:
        out.append(dataclasses.replace(candidate, weight=canary_weight))
    return out


def same_canary(state: CanaryStatus | None, canary_v: ServedVersion | None, stable_v: ServedVersion) -> bool:
    """Whether `status.canary` is about this canary against this stable version."""
    if state is None or canary_v is None:
        return False
    return (state.model, state.version, state.baseline_version) == (
        canary_v.model,
        canary_v.version,
        stable_v.version,
    )
