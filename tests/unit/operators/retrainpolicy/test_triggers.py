"""The trigger evaluations (pure): cron times with CronJob's missed-run rule and DST, held
conditions, feedback ratios, new data, against a clock the tests set."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from llmops.api.retrainpolicy import DriftTrigger, FeedbackTrigger, QualityTrigger, ScheduleTrigger
from llmops.operators.retrainpolicy import names, triggers

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz)


def test_nothing_due_before_the_first_cron_time() -> None:
    check = triggers.schedule(ScheduleTrigger(cron="0 3 * * *"), at(2026, 11, 30, 1), at(2026, 11, 30, 2, 59))
    assert check.due is None and check.missed == 0 and check.next == at(2026, 11, 30, 3)


def test_only_the_most_recent_missed_run_starts() -> None:
    # Down for three days: three 03:00s passed; only the last starts (CronJob), none replayed.
    check = triggers.schedule(ScheduleTrigger(cron="0 3 * * *"), at(2026, 11, 27, 3), at(2026, 11, 30, 9))
    assert check.due == at(2026, 11, 30, 3) and check.missed == 3
    assert check.next == at(2026, 12, 1, 3)


def test_a_run_past_its_starting_deadline_is_skipped() -> None:
    trigger = ScheduleTrigger(cron="0 3 * * *", starting_deadline_seconds=3600)
    check = triggers.schedule(trigger, at(2026, 11, 29, 3), at(2026, 11, 30, 4, 30))
    assert check.due is None and check.late == at(2026, 11, 30, 3)
    assert triggers.schedule(trigger, at(2026, 11, 29, 3), at(2026, 11, 30, 3, 59)).due == at(2026, 11, 30, 3)


def test_too_many_missed_runs_are_counted_up_to_the_cap() -> None:
    check = triggers.schedule(ScheduleTrigger(cron="* * * * *"), at(2026, 11, 30, 0), at(2026, 11, 30, 12))
    assert check.missed == triggers.TOO_MANY_MISSED + 1 and check.due == at(2026, 11, 30, 12)


def test_the_time_zone_is_the_cron_expressions() -> None:
    trigger = ScheduleTrigger(cron="0 3 * * *", time_zone="Europe/Berlin")
    check = triggers.schedule(trigger, at(2026, 11, 29, 3), at(2026, 11, 30, 2, 30))
    assert check.due == at(2026, 11, 30, 2)  # 03:00 CET is 02:00 UTC


def test_dst_skipped_hour_runs_at_the_first_valid_time() -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST; a 02:30 run happens at 03:00 CEST.
    trigger = ScheduleTrigger(cron="30 2 * * *", time_zone="Europe/Berlin")
    check = triggers.schedule(trigger, at(2026, 3, 28, 2, 30, tz=BERLIN), at(2026, 3, 29, 12, tz=BERLIN))
    assert check.due == at(2026, 3, 29, 3, tz=BERLIN).astimezone(UTC)


def test_dst_repeated_hour_runs_twice() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice, so two runs,
    # under two names (an hour apart in UTC), as CronJob does.
    trigger = ScheduleTrigger(cron="30 2 * * *", time_zone="Europe/Berlin")
    first = triggers.schedule(trigger, at(2026, 10, 24, 0, 30), at(2026, 10, 25, 0, 45))
    assert first.due == at(2026, 10, 25, 0, 30)  # 02:30 CEST
    second = triggers.schedule(trigger, first.due, at(2026, 10, 25, 1, 45))
    assert second.due == at(2026, 10, 25, 1, 30)  # 02:30 CET
    assert names.run_name("p", first.due) != names.run_name("p", second.due)


def test_run_names_are_deterministic_per_minute() -> None:
    name = names.run_name("support", at(2026, 11, 30, 3, 0, 42))
    assert name == names.run_name("support", at(2026, 11, 30, 3))
    assert int(name.removeprefix("support-")) * 60 == at(2026, 11, 30, 3).timestamp()
    assert names.run_name("support", at(2026, 11, 30, 3, 1)) != name


def test_a_held_condition_fires_after_its_duration() -> None:
    trigger = DriftTrigger(threshold=0.5, for_seconds=600)
    t0 = at(2026, 11, 30, 10)
    first = triggers.drift(trigger, 0.8, None, t0)
    assert not first.firing and first.pending_since == t0 and "0 s of 600 s" in first.message
    later = triggers.drift(trigger, 0.7, first, t0 + dt.timedelta(seconds=600))
    assert later.firing and later.pending_since == t0 and later.value == 0.7
    # One evaluation below the threshold resets it; so does no data.
    assert triggers.drift(trigger, 0.4, later, t0 + dt.timedelta(seconds=660)).pending_since is None
    assert triggers.drift(trigger, None, later, t0 + dt.timedelta(seconds=660)).pending_since is None
    fired = triggers.fired(later, t0 + dt.timedelta(seconds=600))
    again = triggers.drift(trigger, 0.9, fired, t0 + dt.timedelta(seconds=660))
    assert not again.firing and again.pending_since == t0 + dt.timedelta(seconds=660)


def test_quality_range() -> None:
    trigger = QualityTrigger(name="acc", query="x", min=0.8, for_seconds=60)
    now = at(2026, 11, 30, 10)
    low = triggers.quality(trigger, 0.7, None, now)
    assert low.type == "quality/acc" and low.pending_since == now and "below min 0.8" in low.message
    assert triggers.quality(trigger, 0.9, low, now).pending_since is None


def test_feedback_ratio_needs_the_minimum_count() -> None:
    trigger = FeedbackTrigger(max_negative_ratio=0.2, min_count=10)
    now = at(2026, 11, 30, 10)
    few = triggers.feedback(trigger, 5, 5, None, now)
    assert not few.firing and "fewer than minCount 10" in few.message
    bad = triggers.feedback(trigger, 20, 5, None, now)
    assert bad.firing and bad.value == 0.25
    assert not triggers.feedback(trigger, 20, 4, None, now).firing  # 0.2 is not above 0.2


def test_feedback_queries_select_the_deployment_and_the_name() -> None:
    every, negative = triggers.feedback_queries("ml", "bot", FeedbackTrigger(max_negative_ratio=0.1))
    assert every == (
        'sum(increase(llmops_gateway_feedback_total{namespace="ml",model_deployment="bot",name="thumbs"}'
        "[86400s]))"
    )
    assert 'sentiment="negative"' in negative and negative.endswith("or vector(0)")


def test_new_data_counts_keys_after_the_marker() -> None:
    keys = ["2026-11-29/a.jsonl", "2026-11-30/b.jsonl", "2026-11-30/c.jsonl"]
    now = at(2026, 11, 30, 10)
    status, newest = triggers.new_data(keys, "2026-11-29/a.jsonl", 2, None, now)
    assert status.firing and status.value == 2 and newest == "2026-11-30/c.jsonl"
    status, newest = triggers.new_data(keys, newest, 1, None, now)
    assert not status.firing and newest == "2026-11-30/c.jsonl"
    assert triggers.new_data(keys, None, 3, None, now)[0].firing


def test_feedback_counts_the_champions_ratings_only() -> None:
    every, negative = triggers.feedback_queries("ml", "bot", FeedbackTrigger(max_negative_ratio=0.1), "7")
    assert 'version="7"' in every and 'version="7"' in negative
