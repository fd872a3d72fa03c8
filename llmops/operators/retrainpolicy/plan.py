"""Which run starts now: pure. The firing triggers, run control (suspend, concurrencyPolicy, the
cooldown) and the history limits decide; the reconcile only acts on the answer.

    spec.suspend                       no run; the triggers are still evaluated and shown
    nothing fires                      no run
    an event trigger (drift, quality,  no run
      feedback, newData) fires within
      cooldownSeconds of the last start
    a run is active, Forbid            no run (a due schedule stays due: it starts later, if still
                                       within startingDeadlineSeconds)
    a run is active, Replace           delete the active runs, start the new one
    otherwise                          start the run of the first firing trigger in triggers.ORDER
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.api.retrainpolicy import Reason, RetrainPolicySpec
from llmops.operators.retrainpolicy import triggers
from llmops.operators.retrainpolicy.triggers import Firing


@dataclass(frozen=True)
class Run:
    """A TrainingJob of the policy, as listed from the API."""

    name: str
    phase: str | None
    created: dt.datetime
    trigger: str
    finished: bool


@dataclass(frozen=True)
class Decision:
    start: Firing | None = None
    replace: tuple[str, ...] = ()  # active runs to delete first (Replace)
    why_not: str | None = None  # a firing trigger that did not start a run, and why


def decide(
    spec: RetrainPolicySpec,
    policy: str,
    firings: list[Firing],
    runs: list[Run],
    now: dt.datetime,
) -> Decision:
    """What to start now, given every firing trigger and the policy's runs."""
    if not firings:
        return Decision()
    rank = {family: i for i, family in enumerate(triggers.ORDER)}
    first = sorted(firings, key=lambda f: rank.get(f.family, len(rank)))
    if spec.suspend:
        return Decision(why_not=f"{first[0].type} fired, but spec.suspend is true")
    last_start = max((r.created for r in runs), default=None)
    cooling = last_start is not None and (now - last_start).total_seconds() < spec.cooldown_seconds
    eligible = [f for f in first if not (cooling and f.family in triggers.EVENT)]
    if not eligible:
        assert last_start is not None
        left = spec.cooldown_seconds - int((now - last_start).total_seconds())
        return Decision(why_not=f"{first[0].type} fired during the cooldown ({left} s left)")
    firing = eligible[0]
    name = firing.run_name(policy)
    active = [r.name for r in runs if not r.finished and r.name != name]
    if active and spec.concurrency_policy == "Forbid":
        return Decision(why_not=f"{firing.type} fired while {active[0]} runs (concurrencyPolicy Forbid)")
    replace = tuple(active) if spec.concurrency_policy == "Replace" else ()
    return Decision(start=firing, replace=replace)


def pruned(runs: list[Run], keep_succeeded: int, keep_failed: int, holding: set[str]) -> list[str]:
    """Finished runs beyond the history limits, oldest first; never one whose version is still on
    its way out (`holding`: runs awaiting approval or in their canary)."""
    out: list[str] = []
    for phase, keep in (("Succeeded", keep_succeeded), ("Failed", keep_failed)):
        done = sorted((r for r in runs if r.finished and r.phase == phase), key=lambda r: r.created)
        extra = done[: max(len(done) - keep, 0)]
        out += [r.name for r in extra if r.name not in holding]
    return out


def target_problem(spec: RetrainPolicySpec, md: ModelDeploymentSpec) -> tuple[str, str] | None:
    """(reason, message) why the policy cannot keep this deployment fresh, naming the fields; None
    when it can."""
    template = spec.training_job_template.spec
    if template.output.model_name != md.model.name:
        return Reason.WRONG_MODEL, (
            f"spec.trainingJobTemplate.spec.output.modelName {template.output.model_name!r} is not the model"
            f" ModelDeployment {spec.model_deployment!r} serves ({md.model.name!r})"
        )
    if template.output.registry.uri != md.registry.uri:
        return Reason.WRONG_MODEL, (
            f"spec.trainingJobTemplate.spec.output.registry: the template registers into"
            f" {template.output.registry.uri}, the ModelDeployment serves from {md.registry.uri}"
        )
    if spec.served_traffic is not None and md.gateway.payload_sampling is None:
        return Reason.NO_TRAFFIC, (
            f"spec.servedTraffic: ModelDeployment {spec.model_deployment!r} samples no traffic: set its"
            " spec.gateway.payloadSampling (rate 0 keeps only the feedback)"
        )
    if not spec.promotion.enabled:
        return None
    champion, challenger = spec.promotion.champion_alias, spec.promotion.challenger_alias
    canary = md.rollout.canary if md.rollout else None
    if md.model.alias != champion or canary is None or canary.model.alias != challenger:
        return Reason.NOT_ON_ALIASES, (
            f"ModelDeployment {spec.model_deployment!r} must serve spec.model.alias {champion!r} and canary"
            f" spec.rollout.canary.model.alias {challenger!r} (spec.promotion's aliases), so that promotion"
            " moves aliases and never edits its spec"
        )
    return None
