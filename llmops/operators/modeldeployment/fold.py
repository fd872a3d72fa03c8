"""Fold what one reconcile found (the plan, the live Deployments, the canary's step) into a
ModelDeployment's phase, conditions and status. Pure: facts in, `Outcome` out.

The first row that matches decides (reasons are `llmops.api.modeldeployment.Reason`):

| facts                                                  | state       | phase        | reason               |
|--------------------------------------------------------|-------------|--------------|----------------------|
| spec.suspend, the gateway draining (`draining`)        | reconciling | Suspended    | Suspended            |
| spec.suspend, a served version's pods not all gone yet | reconciling | Suspended    | Suspended            |
| spec.suspend, every served version at 0 pods           | ready       | Suspended    | Suspended            |
| canary verdict RolledBack                              | stalled     | Degraded     | RolledBack           |
| canary verdict Halted (failed, no autoRollback)        | stalled     | Degraded     | AnalysisFailed       |
| the gateway or a served version not rolled out, or a   | reconciling | Progressing  | Progressing          |
|   replaced autoscaler still being deleted (lingering)  |             |              |                      |
| stable version wants 0 replicas, spec scales to zero   | ready       | ScaledToZero | ScaledToZero         |
| canary Analysing, its last INCONCLUSIVE_AFTER analyses | ready       | Ready        | AnalysisInconclusive |
|   or more reached no verdict                           |             |              |                      |
| canary Analysing                                       | ready       | Ready        | CanaryAnalysing      |
| canary verdict Promoted                                | ready       | Ready        | Promoted             |
| otherwise                                              | ready       | Ready        | Serving              |

Beside Ready/Reconciling/Stalled, every outcome has the condition `Suspended` (`suspended_condition`):
True with reason Suspended while spec.suspend is true, else False with reason NotSuspended. Suspended
is Ready=True, as RetrainPolicy's is: the object is where its spec asks (Ready=False goes only with
Stalled here); "not serving" is the phase and the Suspended condition.

Status fields, whatever the row: endpoint, versions (weight, replicas and ready replicas of each
served version), their sums, canary (the step machine's state), aliases (each reference by alias and
the version it resolved to), inventory. The next reconcile comes after `resync_after` seconds, or
sooner when the canary's clock asks for it, or a poll (paced by the runtime) of a lingering child
(LINGERING_RETRY_SECONDS) or of a suspend's drain (DRAIN_POLL_SECONDS); the
reconcile itself shortens it to the alias poll when the spec names an alias. Errors before this
point (a missing version or Secret, a refused child) are the reconcile's own stalled outcomes, in
reconcile.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops.api.modeldeployment import ModelDeploymentSpec, Reason, ResolvedAlias, ServingVersion
from llmops.operators.modeldeployment import canary
from llmops.operators.modeldeployment.names import endpoint, gateway_name
from llmops.operators.modeldeployment.observe import (
    available_replicas,
    desired_replicas,
    ready_replicas,
    rolled_out,
)
from llmops.operators.modeldeployment.plan import Plan, ServingSettings
from llmops.operators.outcome import Outcome

SUSPENDED = "Suspended"  # the condition beside Ready/Reconciling/Stalled
LINGERING_RETRY_SECONDS = 5  # a replaced child whose finalizer is at work: look again this often
DRAIN_POLL_SECONDS = 5  # a suspended deployment's gateway draining: read its gauges again this often


@dataclass(frozen=True)
class Facts:
    """What one reconcile found, for the fold.

    `live`: the child Deployments by name, as the API returned them (a missing one is absent).
    `step`: the canary's step this reconcile, None without a canary. `inventory`: every child's
    inventory entry (apiVersion/kind/name). `lingering`: entries deleted but not gone yet.
    `resync_after`: seconds until the periodic reconcile (already spread by the caller).
    `aliases`: the spec's references by alias and the versions they resolved to this reconcile.
    `draining`: spec.suspend, and what the model servers wait for before going to 0 (plan.drain_wait);
    `drain_left` the seconds left until they go at the latest (the drain's time limit: a clock).
    """

    spec: ModelDeploymentSpec
    name: str
    namespace: str
    settings: ServingSettings
    plan: Plan
    live: Mapping[str, dict]
    step: canary.Step | None
    inventory: Sequence[str]
    lingering: Sequence[str] = ()
    resync_after: float = 300
    aliases: Sequence[ResolvedAlias] = ()
    draining: str | None = None
    drain_left: float | None = None


def fold(facts: Facts) -> Outcome:
    """The ModelDeployment's state after this reconcile (see the table above), with its `Suspended`
    condition."""
    return dataclasses.replace(_fold(facts), conditions=(suspended_condition(facts.spec),))


def _fold(facts: Facts) -> Outcome:
    spec, plan, live, step = facts.spec, facts.plan, facts.live, facts.step
    serving = [
        ServingVersion(
            name=v.model,
            version=v.version,
            role=v.role,
            weight=v.weight,
            replicas=desired_replicas(live.get(v.deployment) or {}),
            ready_replicas=ready_replicas(live.get(v.deployment)),
            deployment=v.deployment,
        )
        for v in plan.versions
    ]
    fields: dict[str, Any] = {
        "endpoint": endpoint(facts.name, facts.namespace, facts.spec.gateway.tls is not None),
        "versions": serving,
        "replicas": sum(v.replicas for v in serving),
        "ready_replicas": sum(v.ready_replicas for v in serving),
        "canary": step.status if step else None,
        "aliases": list(facts.aliases),
        "inventory": list(facts.inventory),
    }
    requeue = facts.resync_after
    if step and step.requeue_after is not None:
        requeue = min(requeue, step.requeue_after)

    children = [gateway_name(facts.name), *(v.deployment for v in plan.versions)]
    waiting = [
        f"{name} ({available_replicas(live.get(name))}/{desired_replicas(live.get(name) or {})} available)"
        for name in children
        if not rolled_out(live.get(name))
    ]
    stable = plan.role("stable")
    assert stable is not None
    if spec.suspend:
        return _suspended(facts, fields, requeue)
    verdict = step.status.verdict if step else None
    who = f"{stable.model}:{stable.version}"
    if verdict in ("RolledBack", "Halted") and step:
        message = step.status.message or "the canary failed its analysis"
        text = (
            f"canary {step.status.model}:{step.status.version} {verdict.lower()}: {message}."
            f" {who} serves {stable.weight}% of the traffic"
        )
        reason = Reason.ROLLED_BACK if verdict == "RolledBack" else Reason.ANALYSIS_FAILED
        return Outcome("stalled", "Degraded", reason, text, fields, requeue_after=requeue)
    waiting += [f"{entry} to be deleted before its successor is applied" for entry in facts.lingering]
    if waiting:
        text = f"waiting for {', '.join(waiting)}"
        previous = plan.role("previous")
        if previous:
            text += f"; {previous.model}:{previous.version} serves until {who} is ready"
        outcome = Outcome(
            "reconciling", "Progressing", Reason.PROGRESSING, text, fields, requeue_after=requeue
        )
        # A finalizer at work elsewhere: looked at again as a poll (paced when many objects poll).
        return outcome.sooner(LINGERING_RETRY_SECONDS, poll=True) if facts.lingering else outcome
    url = fields["endpoint"]
    if desired_replicas(live.get(stable.deployment) or {}) == 0 and spec.autoscaling.scale_to_zero:
        text = f"{who} is scaled to zero; the first request at {url} wakes it"
        return Outcome("ready", "ScaledToZero", Reason.SCALED_TO_ZERO, text, fields, requeue_after=requeue)
    if verdict == "Analysing" and step:
        s = step.status
        stage = f"step {s.step + 1} of {len(canary.weights(spec.rollout.canary))}"  # type: ignore[union-attr]
        text = f"serving {who} at {url}; canary {s.model}:{s.version} at {step.weight}% ({stage})"
        if s.inconclusive_analyses >= canary.INCONCLUSIVE_AFTER:
            text += (
                f"; its last {s.inconclusive_analyses} analyses ({s.window_seconds} s windows) reached no"
                f" verdict: {s.message}. The step holds until one does: check that the canary gets"
                f" traffic and that {facts.settings.prometheus_url} scrapes the gateway"
            )
            return Outcome(
                "ready", "Ready", Reason.ANALYSIS_INCONCLUSIVE, text, fields, requeue_after=requeue
            )
        return Outcome("ready", "Ready", Reason.CANARY_ANALYSING, text, fields, requeue_after=requeue)
    reason = Reason.PROMOTED if verdict == "Promoted" else Reason.SERVING
    text = f"serving {who} at {url} with {fields['ready_replicas']} ready replica(s)"
    return Outcome("ready", "Ready", reason, text, fields, requeue_after=requeue)


def suspended_condition(spec: ModelDeploymentSpec) -> tuple[str, bool, str, str]:
    """The `Suspended` condition: (type, status, reason, message)."""
    if spec.suspend:
        return (
            SUSPENDED,
            True,
            Reason.SUSPENDED,
            "spec.suspend is true: every version at 0 replicas; the gateway answers 503 model_suspended",
        )
    return SUSPENDED, False, Reason.NOT_SUSPENDED, "spec.suspend is false"


def _suspended(facts: Facts, fields: dict[str, Any], requeue: float) -> Outcome:
    """spec.suspend: Suspended, reconciling until no served version has a pod left, then ready. A pod
    being deleted no longer counts (`status.replicas`): ready says every pod was told to stop; one may
    still finish its requests within its termination grace period (vllm.py)."""
    running = [
        f"{v.deployment} ({_pods(facts.live.get(v.deployment))} pods)"
        for v in facts.plan.versions
        if _pods(facts.live.get(v.deployment)) or not _observed(facts.live.get(v.deployment))
    ]
    url = fields["endpoint"]
    answer = f"the gateway at {url} answers every request 503 model_suspended"
    if facts.draining:
        text = f"suspending: {answer}; the model servers wait: {facts.draining}"
        outcome = Outcome("reconciling", "Suspended", Reason.SUSPENDED, text, fields, requeue_after=requeue)
        # Prometheus read again as a poll (paced when many objects poll), the time limit's end a clock.
        outcome = outcome.sooner(DRAIN_POLL_SECONDS, poll=True)
        return outcome if facts.drain_left is None else outcome.sooner(max(facts.drain_left, 1.0))
    if running:
        text = f"suspending: waiting for {', '.join(running)} to scale to 0; {answer}"
        return Outcome("reconciling", "Suspended", Reason.SUSPENDED, text, fields, requeue_after=requeue)
    text = f"suspended (spec.suspend): every version is at 0 replicas; {answer}"
    return Outcome("ready", "Suspended", Reason.SUSPENDED, text, fields, requeue_after=requeue)


def _pods(deployment: dict | None) -> int:
    """The Deployment's pods not terminating (`status.replicas`)."""
    return int(((deployment or {}).get("status") or {}).get("replicas") or 0)


def _observed(deployment: dict | None) -> bool:
    """The Deployment's controller has seen its current spec (a missing one has nothing to stop)."""
    if not deployment:
        return True
    status = deployment.get("status") or {}
    return status.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 1)
