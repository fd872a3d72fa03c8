"""A ModelRetirement's decisions that are not manifests: which step is next, what the drain does to
each ModelDeployment that serves a retired version, and the dry run's list. Pure.

The drain, per ModelDeployment whose status lists a retired version:

| drain mode | how it serves the version                    | action                                   |
|------------|----------------------------------------------|------------------------------------------|
| none       | any                                          | StillServed (refused, with the names)    |
| Replace    | as its canary, by version or another model   | ServedAsCanary (end the canary first)    |
| Replace    | canary alias of the same model names it      | move the canary alias first              |
| Replace    | stable, through an alias of the same model   | move that alias to the replacement       |
| Replace    | stable, by version (or another model)        | patch spec.model to the replacement      |
| Replace    | previous (being replaced already)            | wait                                     |
| Suspend    | any, not suspended yet                       | patch spec.suspend: true                 |
| Suspend    | suspended                                    | wait for its replicas to reach 0         |

The drain is over when no ModelDeployment serves a retired version with a weight or a replica and
the gateways report no request in flight for it, or when `gracePeriodSeconds` have passed since it
began (the post-mortem then says how many were in flight).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from llmops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from llmops.api.modelretirement import STEPS, ModelRetirementSpec, Reason, StepStatus


@dataclass(frozen=True)
class Served:
    """A ModelDeployment as the drain sees it."""

    name: str
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus

    def serving(self, model: str, versions: set[str]) -> list[tuple[str, str]]:
        """(version, role) of every retired version this deployment still serves."""
        return [
            (v.version, v.role)
            for v in self.status.versions
            if v.name == model
            and v.version in versions
            and (v.weight > 0 or v.replicas > 0 or v.ready_replicas)
        ]

    @property
    def suspended(self) -> bool:
        return bool(getattr(self.spec, "suspend", False))


@dataclass(frozen=True)
class DrainAction:
    deployment: str
    kind: Literal["move-alias", "patch-model", "suspend", "wait"]
    detail: str
    alias: str | None = None


@dataclass(frozen=True)
class DrainPlan:
    actions: list[DrainAction] = field(default_factory=list)
    problem: tuple[str, str] | None = None  # (reason, message): the drain cannot go on as specified

    @property
    def done(self) -> bool:
        return self.problem is None and not self.actions


def drain(
    spec: ModelRetirementSpec,
    versions: set[str],
    deployments: list[Served],
    aliases: Mapping[str, str] | None = None,
) -> DrainPlan:
    """What the drain does now to each deployment that still serves a retired version (table above).
    `aliases`: the model's aliases (alias -> version), to move a canary alias that names a retired
    version along with the stable one (else the deployment would canary the version it retires)."""
    model = spec.model.name
    aliases = aliases or {}
    actions: list[DrainAction] = []
    unplanned: list[str] = []
    for d in sorted(deployments, key=lambda d: d.name):
        served = d.serving(model, versions)
        canary_alias = _canary_alias(d, model)
        stale_canary = canary_alias is not None and aliases.get(canary_alias) in versions
        if not served and not (stale_canary and spec.drain is not None and spec.drain.mode == "Replace"):
            continue
        where = ", ".join(f"{v} as {role}" for v, role in served) or "nothing yet"
        if spec.drain is None:
            unplanned.append(f"{d.name} ({where})")
            continue
        if spec.drain.mode == "Suspend":
            if d.suspended:
                actions.append(DrainAction(d.name, "wait", f"suspended; waiting for {where} to scale to 0"))
            else:
                actions.append(DrainAction(d.name, "suspend", f"suspend (serves {where})"))
            continue
        replacement = spec.drain.replacement
        assert replacement is not None  # CEL: Replace needs it
        target = (replacement.alias and f"alias {replacement.alias}") or f"version {replacement.version}"
        same_model = replacement.name == model
        canary = [v for v, role in served if role == "canary"]
        if (canary or stale_canary) and not (canary_alias is not None and same_model):
            if canary:
                return DrainPlan(
                    problem=(
                        Reason.CANARY,
                        f"ModelDeployment {d.name} runs version {canary[0]} as its canary: end the canary"
                        " (promote or roll it back) before retiring it",
                    )
                )
        elif canary or stale_canary:
            assert canary_alias is not None
            if replacement.alias == canary_alias:
                return DrainPlan(problem=_names_it(canary_alias, d.name))
            actions.append(
                DrainAction(
                    d.name,
                    "move-alias",
                    f"move canary alias {model}@{canary_alias} to {target}",
                    alias=canary_alias,
                )
            )
        stable = [v for v, role in served if role == "stable"]
        if not stable:
            if any(role == "previous" for _, role in served):
                actions.append(DrainAction(d.name, "wait", f"{where}: being replaced already"))
            continue
        ref = d.spec.model
        if ref.alias is not None and ref.name == model and same_model:
            if replacement.alias == ref.alias:
                return DrainPlan(problem=_names_it(ref.alias, d.name))
            actions.append(
                DrainAction(
                    d.name,
                    "move-alias",
                    f"move alias {model}@{ref.alias} to {target} (serves {where})",
                    alias=ref.alias,
                )
            )
        else:
            actions.append(
                DrainAction(d.name, "patch-model", f"point spec.model at {replacement.name} {target}")
            )
    if unplanned:
        return DrainPlan(
            problem=(
                Reason.STILL_SERVED,
                "still served by ModelDeployment " + "; ".join(unplanned) + ": set spec.drain (Replace with"
                " a replacement, or Suspend)",
            )
        )
    return DrainPlan(actions=actions)


def _canary_alias(d: Served, model: str) -> str | None:
    rollout = d.spec.rollout
    ref = rollout.canary.model if rollout is not None and rollout.canary is not None else None
    return ref.alias if ref is not None and ref.alias is not None and ref.name == model else None


def _names_it(alias: str, deployment: str) -> tuple[str, str]:
    return (
        Reason.STILL_SERVED,
        f"spec.drain.replacement is alias {alias}, which names the version ModelDeployment {deployment}"
        " serves: name another version or alias",
    )


def next_step(steps: list[StepStatus]) -> str | None:
    """The first step not Succeeded or Skipped, in the order of STEPS; None when every one is done."""
    done = {s.name for s in steps if s.state in ("Succeeded", "Skipped")}
    return next((name for name in STEPS if name not in done), None)


def grace_left(spec: ModelRetirementSpec, started: dt.datetime | None, now: dt.datetime) -> float:
    """Seconds left of the drain's grace period (spec.drain.gracePeriodSeconds from `started`): 0 once
    it is over; infinite without a drain or before it started (it cannot be over)."""
    if spec.drain is None or started is None:
        return math.inf
    return max(spec.drain.grace_period_seconds - (now - started).total_seconds(), 0.0)


def merged(steps: list[StepStatus], update: StepStatus) -> list[StepStatus]:
    """`steps` with `update` in its place, in the order of STEPS."""
    by_name = {s.name: s for s in steps}
    by_name[update.name] = update
    return [by_name[n] for n in STEPS if n in by_name]
