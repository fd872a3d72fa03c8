"""Status conventions, in one place: conditions that kubectl wait, kstatus (Flux) and Argo CD understand.

Pure functions over `Condition` lists. Custom resources take no strategic merge patch, and a merge
patch replaces a list whole, so every function returns the full list; `lastTransitionTime` moves only
when a status really changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from llmops.api.common import Condition, ConditionStatus, Status

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

State = Literal["ready", "reconciling", "stalled"]

# kstatus reads Reconciling and Stalled as "abnormal-true"; Ready must agree with both.
_STANDARD: dict[State, tuple[ConditionStatus, ConditionStatus, ConditionStatus]] = {
    # state:        Ready      Reconciling  Stalled
    "ready": ("True", "False", "False"),
    "reconciling": ("Unknown", "True", "False"),
    "stalled": ("False", "False", "True"),
}


def _status(value: ConditionStatus | bool) -> ConditionStatus:
    if isinstance(value, bool):
        return "True" if value else "False"
    return value


def get_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The condition of `type`, if present."""
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: Sequence[Condition], type: str) -> bool:
    """Whether the condition of `type` is present and True."""
    condition = get_condition(conditions, type)
    return condition is not None and condition.status == "True"


def set_condition(
    conditions: Sequence[Condition],
    type: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A new list with condition `type` set; others keep their place, a new type goes last.

    lastTransitionTime is `now` (to the second, as metav1.Time) only if the status changed.
    """
    status = _status(status)
    old = get_condition(conditions, type)
    since = old.last_transition_time if old is not None and old.status == status else _seconds(now)
    new = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type else c for c in conditions]


def standard(
    conditions: Sequence[Condition],
    state: State,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Set Ready, Reconciling and Stalled together so that they never contradict each other.

    All three carry the same reason and message: one explanation of the object's state.
    """
    ready, reconciling, stalled = _STANDARD[state]
    for type, status in ((READY, ready), (RECONCILING, reconciling), (STALLED, stalled)):
        conditions = set_condition(conditions, type, status, reason, message, generation, now)
    return list(conditions)


def ready(
    conditions: Sequence[Condition], reason: str, message: str, generation: int | None, now: datetime
) -> list[Condition]:
    """Ready=True, Reconciling=False, Stalled=False: the object does what its spec asks."""
    return standard(conditions, "ready", reason, message, generation, now)


def reconciling(
    conditions: Sequence[Condition], reason: str, message: str, generation: int | None, now: datetime
) -> list[Condition]:
    """Reconciling=True, Ready=Unknown, Stalled=False: work in progress that should finish by itself."""
    return standard(conditions, "reconciling", reason, message, generation, now)


def stalled(
    conditions: Sequence[Condition], reason: str, message: str, generation: int | None, now: datetime
) -> list[Condition]:
    """Stalled=True, Ready=False, Reconciling=False: stuck until someone changes something."""
    return standard(conditions, "stalled", reason, message, generation, now)


def parse_time(value: Any) -> datetime | None:
    """A metav1.Time as the API returns it ("2026-11-30T10:00:00Z"), or a datetime, as an aware UTC
    datetime; None for nothing or something unreadable."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def status_patch(status: Status, generation: int) -> dict[str, Any]:
    """The whole status as a merge patch, observedGeneration set to `generation`.

    Unset fields come out as null, which a merge patch deletes, so nothing stale survives. Lists are
    replaced whole, so their items carry only the fields that are set. Maps (`dict` fields) merge key
    by key: a key once written stays until it is set to null.
    """
    status = status.model_copy(update={"observed_generation": generation})
    return _nulls_kept(status.model_dump(mode="json", by_alias=True))


def _nulls_kept(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nulls_kept(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls_dropped(v) for v in value]
    return value


def _nulls_dropped(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nulls_dropped(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_nulls_dropped(v) for v in value]
    return value


def _seconds(now: datetime) -> datetime:
    """metav1.Time has second precision; naive times are taken as UTC."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.replace(microsecond=0)
