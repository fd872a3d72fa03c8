"""The Event policy every kind shares: which Events an outcome calls for. Pure.

The runtime (llmops/operators/runtime.py) asks `announcement` after each reconcile of a kind that declares
`Announcements` on its `Kind`, and posts the answer, so the policy is written once:

| before (status)               | outcome                | Event                           |
|-------------------------------|------------------------|---------------------------------|
| anything                      | stalled, reason in own | none (the kind posted its own)  |
| Stalled=True, the same reason | stalled                | none (not on every retry)       |
| anything else                 | stalled                | Warning stalled_reason(outcome) |
| another phase                 | in a phase of `phases` | Normal phases[phase]            |
| anything else                 | anything else          | none                            |

The message is the outcome's. A kind's `transitions` add Events for changes no phase shows (a
ModelDeployment's new version serving). Every Event the runtime or a kind posts also becomes an audit
record (llmops/operators/auditing.py). Kinds post only their domain Events themselves (a canary's step, a
cleanup that failed); the runtime posts its own for what never reaches a kind (InvalidSpec, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmops import conditions
from llmops.api.common import Status
from llmops.operators.outcome import Outcome

Transition = tuple[str, str, bool, dict[str, Any]]


@dataclass(frozen=True)
class Announcements:
    """The Events the runtime posts from a kind's outcomes: the same policy for every kind.

    - A Warning when the outcome is stalled for a reason the object was not Stalled for before: once
      per new reason, not on every retry. Its Event reason is `stalled_reason(outcome)`, by default
      the condition's reason.
    - A Normal Event when the phase changes into one of `phases` (the phase entered -> the Event
      reason); other phase changes are not announced.

    The message is the outcome's message. `own`: stalled reasons the kind announces itself, with a
    domain Event of its own at the moment it happens (a canary's rollback), so the runtime stays quiet.
    """

    phases: Mapping[str, str] = field(default_factory=dict)
    stalled_reason: Callable[[Outcome], str] | None = None
    own: frozenset[str] = frozenset()
    # Events for changes the phase does not show (a new version serving): pure, given the status
    # before and the status written (camelCase, as `status_patch` makes it); each is (Event reason,
    # message, warning, audit subject: keyword arguments of `Context.event` such as model and version).
    transitions: Callable[[Status, dict[str, Any]], list[Transition]] | None = None


def announcement(policy: Announcements, before: Status, outcome: Outcome) -> tuple[str, str, bool] | None:
    """(Event reason, message, warning) that `outcome` calls for after `before`, else None. Pure."""
    if outcome.state == "stalled":
        if outcome.reason in policy.own:
            return None
        was = conditions.get_condition(before.conditions, conditions.STALLED)
        if was is not None and was.status == "True" and was.reason == outcome.reason:
            return None
        reason = policy.stalled_reason(outcome) if policy.stalled_reason else outcome.reason
        return reason, outcome.message, True
    if outcome.phase != before.phase and outcome.phase in policy.phases:
        return policy.phases[outcome.phase], outcome.message, False
    return None
