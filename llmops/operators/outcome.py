"""Where an object stands after one reconcile: the value every kind's pure fold returns.

Kept free of kopf and the Kubernetes client, so the pure modules (folds, plans, builders) that
return it stay importable without them (tests/unit/test_purity.py checks that).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from llmops import conditions


@dataclass(frozen=True)
class Outcome:
    """Where an object stands after one reconcile.

    `state`: "ready" (does what the spec asks), "reconciling" (work in progress that should
    finish by itself) or "stalled" (stuck until someone changes something). `reason` and
    `message` explain it. `status` holds the kind's own status fields (snake_case, as in its
    pydantic status model).
    """

    state: conditions.State
    phase: str
    reason: str
    message: str
    status: dict[str, Any] = field(default_factory=dict)
    # Reconcile again after this many seconds even if nothing changes (a clock the kind waits on, a
    # resync that repairs drift; with `retry` a retry, with `poll` a poll). None: only on changes.
    requeue_after: float | None = None
    # The kind's own conditions beside Ready/Reconciling/Stalled: (type, status, reason, message).
    conditions: tuple[tuple[str, bool, str, str], ...] = ()
    # Whether `requeue_after` is a retry (a look again at something missing, refused or not answering)
    # rather than a clock the kind waits on (a canary step, a resync, a retention sweep). The
    # runtime paces the retries of all objects of a kind together (runtime.retry_after), so that
    # thousands failing at once, on one missing Secret or one registry down, do not come back together.
    retry: bool = False
    # Whether `requeue_after` is a poll: a look at progress made elsewhere (a Ray job's, a drain's, a
    # policy's triggers, a child's finalizer) that may come later, rather than a clock that must come
    # on time (a canary step, a schedule, a deadline, a grace period's end). The runtime paces the
    # polls of all objects of a kind together (runtime.poll_after), so that their number does not set
    # the operator's load. Never with `retry`.
    poll: bool = False
    # With `retry` or `poll`: the soonest clock the object waits on besides (seconds), which the
    # retry or poll came before; pacing it never pushes the object past that clock. None: no such clock.
    clock: float | None = None

    def sooner(self, seconds: float, retry: bool = False, poll: bool = False) -> Outcome:
        """This outcome, reconciled again no later than `seconds` (a clock; with `retry` a retry, with
        `poll` a poll): whichever wait comes first sets `requeue_after`, `retry` and `poll`; when that
        is a retry or a poll, the soonest clock of them all (`clock` included) is kept in `clock`."""
        waits = [(seconds, _RETRY if retry else _POLL if poll else _CLOCK)]
        if self.requeue_after is not None:
            waits.append((self.requeue_after, _RETRY if self.retry else _POLL if self.poll else _CLOCK))
        if self.clock is not None:
            waits.append((self.clock, _CLOCK))
        first, how = min(waits)  # (seconds, how): at a tie the clock comes first, then the poll
        clocks = [at for at, h in waits if h == _CLOCK]
        clock = min(clocks) if how != _CLOCK and clocks else None
        return dataclasses.replace(
            self, requeue_after=first, retry=how == _RETRY, poll=how == _POLL, clock=clock
        )


# What a wait in `Outcome.sooner` is, in the order that wins a tie.
_CLOCK, _POLL, _RETRY = 0, 1, 2
