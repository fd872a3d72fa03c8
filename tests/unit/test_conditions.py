"""Condition semantics: transition times, the kstatus invariants, and the status patch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.api.common import Condition
from llmops.api.trainingjob import Progress, TrainingJobStatus
from llmops.conditions import (
    READY,
    RECONCILING,
    STALLED,
    get_condition,
    is_true,
    ready,
    reconciling,
    set_condition,
    stalled,
    standard,
    status_patch,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_is_appended_with_time_to_the_second() -> None:
    conditions = set_condition([], "Ready", "False", "Starting", "pods pending", 1, T0)
    (condition,) = conditions
    assert condition.last_transition_time == T0.replace(microsecond=0)
    assert (condition.status, condition.reason, condition.observed_generation) == ("False", "Starting", 1)


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    before = set_condition([], "Ready", "False", "Starting", "0/2 ready", 1, T0)
    after = set_condition(before, "Ready", "False", "Scaling", "1/2 ready", 2, T1)
    assert after[0].last_transition_time == before[0].last_transition_time
    assert (after[0].reason, after[0].message, after[0].observed_generation) == ("Scaling", "1/2 ready", 2)


def test_status_change_moves_transition_time() -> None:
    before = set_condition([], "Ready", "False", "Starting", "", 1, T0)
    after = set_condition(before, "Ready", True, "Serving", "2/2 ready", 1, T1)
    assert after[0].status == "True"
    assert after[0].last_transition_time == T1.replace(microsecond=0)


def test_order_is_kept_and_input_untouched() -> None:
    conditions = set_condition([], "A", "True", "R", "", 1, T0)
    conditions = set_condition(conditions, "B", "True", "R", "", 1, T0)
    frozen = [c.model_copy() for c in conditions]
    changed = set_condition(conditions, "A", "False", "R", "", 1, T1)
    assert [c.type for c in changed] == ["A", "B"]
    assert conditions == frozen


def test_naive_now_is_utc() -> None:
    (condition,) = set_condition([], "Ready", "True", "R", "", None, datetime(2025, 1, 1, 12, 0, 0))
    assert condition.last_transition_time.tzinfo is not None


def test_helpers() -> None:
    conditions = ready([], "Serving", "2/2 replicas ready", 3, T0)
    assert [c.type for c in conditions] == [READY, RECONCILING, STALLED]
    assert is_true(conditions, READY) and not is_true(conditions, STALLED)
    assert get_condition(conditions, "Missing") is None
    assert {c.reason for c in conditions} == {"Serving"}
    assert get_condition(reconciling(conditions, "Rolling", "", 4, T1), READY).status == "Unknown"
    assert get_condition(stalled(conditions, "BadSpec", "", 4, T1), READY).status == "False"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ready", "reconciling", "stalled"]), min_size=1, max_size=8))
def test_standard_conditions_never_contradict(states: list) -> None:
    conditions: list[Condition] = []
    for i, state in enumerate(states):
        now = T0 + timedelta(seconds=i)
        previous = {c.type: c for c in conditions}
        conditions = standard(conditions, state, "Because", f"step {i}", i, now)
        by_type = {c.type: c for c in conditions}
        assert len(conditions) == 3
        if by_type[READY].status == "True":  # kstatus: Current
            assert by_type[RECONCILING].status == by_type[STALLED].status == "False"
        if by_type[STALLED].status == "True":  # kstatus: Failed
            assert by_type[READY].status == "False"
        assert [by_type[t].status == "True" for t in (READY, RECONCILING, STALLED)].count(True) == 1
        for type, condition in by_type.items():
            old = previous.get(type)
            moved = condition.last_transition_time != (old.last_transition_time if old else None)
            assert moved == (old is None or old.status != condition.status)
            assert condition.observed_generation == i


def test_status_patch_is_complete_and_deletes_stale_fields() -> None:
    status = TrainingJobStatus(
        phase="Running",
        conditions=reconciling([], "Training", "step 1", 1, T0),
        progress=Progress(stage="Training", step=1),
    )
    patch = status_patch(status, generation=5)
    assert patch["observedGeneration"] == 5
    assert patch["phase"] == "Running"
    assert patch["message"] is None and patch["modelVersion"] is None  # merge patch: delete
    assert patch["progress"]["loss"] is None
    assert patch["conditions"][0] == {
        "type": "Ready",
        "status": "Unknown",
        "observedGeneration": 1,
        "lastTransitionTime": "2025-01-01T12:00:00Z",
        "reason": "Training",
        "message": "step 1",
    }
    assert all(None not in c.values() for c in patch["conditions"])
