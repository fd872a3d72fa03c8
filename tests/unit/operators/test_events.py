"""The Event policy (llmops/operators/events.py), row by row from its table: a Warning once per new stalled
reason, a Normal Event on an announced phase change."""

from __future__ import annotations

import datetime as dt

from llmops import conditions
from llmops.api.common import Status
from llmops.operators import events
from llmops.operators.events import Announcements
from llmops.operators.outcome import Outcome

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
POLICY = Announcements(phases={"Running": "Started"})


def status(phase: str | None, state: conditions.State = "reconciling", reason: str = "Created") -> Status:
    return Status(phase=phase, conditions=conditions.standard([], state, reason, "", 1, NOW))


def test_a_warning_once_per_new_stalled_reason() -> None:
    stalled = Outcome("stalled", "Pending", "CredentialsNotFound", "create the Secret")
    assert events.announcement(POLICY, status("Pending"), stalled) == (
        "CredentialsNotFound",
        "create the Secret",
        True,
    )
    again = status("Pending", "stalled", "CredentialsNotFound")
    assert events.announcement(POLICY, again, stalled) is None  # not on every retry
    other = Outcome("stalled", "Pending", "BaseModelNotFound", "register it")
    assert events.announcement(POLICY, again, other)[:1] == ("BaseModelNotFound",)  # type: ignore[index]
    named = Announcements(stalled_reason=lambda outcome: "Failed")
    assert events.announcement(named, status("Pending"), stalled)[:1] == ("Failed",)  # type: ignore[index]


def test_a_normal_event_on_an_announced_phase_change() -> None:
    running = Outcome("reconciling", "Running", "Training", "step 1")
    assert events.announcement(POLICY, status("Pending"), running) == ("Started", "step 1", False)
    assert events.announcement(POLICY, status("Running"), running) is None
    pending = Outcome("reconciling", "Pending", "Starting", "")
    assert events.announcement(POLICY, status(None), pending) is None  # not an announced phase


def test_reasons_the_kind_announces_itself_stay_quiet() -> None:
    """A canary's rollback is announced by the canary's own Event when it happens: the runtime does
    not post a second Warning for the Stalled condition it leads to."""
    from llmops.api.common import Status
    from llmops.operators.events import Announcements, announcement
    from llmops.operators.outcome import Outcome

    rolled = Outcome("stalled", "Degraded", "RolledBack", "canary rolled back")
    assert announcement(Announcements(own=frozenset({"RolledBack"})), Status(), rolled) is None
    assert announcement(Announcements(), Status(), rolled) == ("RolledBack", "canary rolled back", True)
