"""Resyncs and alias polls paced so that together they come at a bounded rate (operators.pacing), and
the ModelDeployment's reconcile taking its resync period (and its re-apply of unchanged children) and
its alias poll period from them."""

from __future__ import annotations

import logging
import time

import pytest

from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.operators import pacing
from llmops.operators.modeldeployment.plan import ServingSettings
from llmops.operators.modeldeployment.reconcile import Reconciler
from llmops.operators.runtime import Context


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    return now


def test_the_period_stretches_to_objects_over_the_rate_and_forgets_objects_that_stop(clock) -> None:
    pacer = pacing.ResyncPacer()
    periods = [pacer.period(f"uid-{i}", 300, 2) for i in range(1000)]
    assert periods[0] == 300 and periods[599] == 300  # 600 objects at 2 a second: 300 s each
    assert periods[600] == 300.5 and periods[-1] == 500  # 1,000: every 500 s, 2 a second
    assert pacer.period("uid-0", 300, 2) == 500 and len(pacer) == 1000  # counted once
    clock[0] += 599  # within twice the period each was given (300-500 s): all still counted
    assert pacer.period("uid-1", 300, 2) == 500 and len(pacer) == 1000
    clock[0] += 402  # the others asked 1,001 s ago, more than twice what they were given: gone
    assert pacer.period("uid-2", 300, 2) == 300 and len(pacer) == 2
    # Each on the period it was given: at 601 s, the first 600 (given 300 s) are gone, the rest stay.
    pacer = pacing.ResyncPacer()
    for i in range(1000):
        pacer.period(f"uid-{i}", 300, 2)
    clock[0] += 601
    assert pacer.period("late", 300, 2) == 300 and len(pacer) == 401  # not 1,001 at 500.5 s
    with pytest.raises(ValueError, match="LLMOPS_RESYNC_RATE='0'"):
        ServingSettings.from_env({"LLMOPS_RESYNC_RATE": "0"})
    with pytest.raises(ValueError, match="LLMOPS_RESYNC_RATE='fast'"):
        ServingSettings.from_env({"LLMOPS_RESYNC_RATE": "fast"})
    assert ServingSettings.from_env({"LLMOPS_RESYNC_RATE": "0.5"}).resync_rate == 0.5
    for value in ("0", "-3", "nan", "often"):
        with pytest.raises(ValueError, match=f"LLMOPS_ALIAS_POLL_RATE='{value}': alias polls a second"):
            ServingSettings.from_env({"LLMOPS_ALIAS_POLL_RATE": value})
    assert ServingSettings.from_env({"LLMOPS_ALIAS_POLL_RATE": "25"}).alias_poll_rate == 25


def test_an_object_given_a_long_period_keeps_no_other_counted_past_its_own(clock) -> None:
    """Each object lapses twice the period it was given after it last asked, whatever came before
    it: a retry given 600 s first, then 100 given 60 s that stop (their objects deleted) are
    forgotten after 120 s, not when the first lapses (1,200 s). Those that ask again keep counting
    from their last ask, and forgetting one (it no longer retries) takes it out at once."""
    pacer = pacing.ResyncPacer()
    assert pacer.period("long", 600, 5) == 600
    for i in range(100):
        pacer.period(f"short-{i}", 60, 5)
    clock[0] += 100
    for i in range(10):  # these ten ask again at 100 s: they lapse at 220 s
        pacer.period(f"short-{i}", 60, 5)
    clock[0] += 21  # 121 s: the 90 that stopped lapsed at 120 s; the ten and the long one stay
    assert pacer.period("new", 60, 5) == 60 and len(pacer) == 12
    pacer.forget("short-0")
    assert len(pacer) == 11
    clock[0] += 100  # 221 s: the ten lapsed at 220 s (the one forgotten, too); the long one stays
    assert pacer.period("new", 60, 5) == 60 and len(pacer) == 2
    # Thousands of asks by the same few objects keep the bookkeeping near their count.
    for _ in range(1000):
        for uid in ("a", "b", "c"):
            pacer.period(uid, 60, 5)
    assert len(pacer) == 5 and len(pacer._lapses) <= 2 * 5 + 64
    # ...and so do objects forgotten (a burst of retries that all healed), with no ask after them.
    for i in range(1000):
        pacer.period(f"burst-{i}", 60, 5)
    for i in range(1000):
        pacer.forget(f"burst-{i}")
    assert len(pacer) == 5 and len(pacer._lapses) <= 2 * 5 + 64


def test_alias_polls_are_paced_apart_from_resyncs(clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ModelDeployment that follows an alias asks to be run again within its alias poll period:
    alias_poll_seconds (30) up to 300 such objects at 10 polls a second, objects ÷ 10 beyond (1,000:
    100 s), and never later than a sooner run its reconcile asked for. Objects pinned to a version
    are reconciled through the same Reconciler but not counted."""
    from llmops.api.modeldeployment import ModelDeploymentStatus
    from llmops.operators.modeldeployment import reconcile
    from llmops.operators.outcome import Outcome

    def ctx(uid: str) -> Context:
        body = {"metadata": {"name": uid, "namespace": "ns", "uid": uid}}
        return Context(
            body=body,
            applier=None,  # type: ignore[arg-type]
            logger=logging.getLogger("test"),
            status=ModelDeploymentStatus(),
        )

    def spec(model: dict) -> ModelDeploymentSpec:
        registry = {"local": {"path": "/r"}}
        return ModelDeploymentSpec.model_validate(
            {"model": {"name": "bot", **model}, "registry": registry, "resources": {"cpu": 1}}
        )

    aliased, pinned = spec({"alias": "champion"}), spec({"version": "1"})
    monkeypatch.setattr(reconcile.random, "uniform", lambda low, high: high)  # the spread's top
    for count, others, sooner, wanted in (
        (1, aliased, None, 30),
        (300, aliased, None, 30),
        (1000, aliased, None, 100),
        (1000, aliased, 5.0, 5.0),  # a canary's window, say: sooner than the stretched poll
        (1000, pinned, None, 30),  # 999 objects pinned to a version: no alias polls to pace
    ):
        settings = ServingSettings(resync_seconds=300, alias_poll_seconds=30, alias_poll_rate=10)
        reconciler = Reconciler(settings)
        # The reconcile itself left out: what it asks is its resync (as a Ready one does) or sooner.
        reconciler._guarded = lambda spec, ctx, settings, r=reconciler, s=sooner: Outcome(  # type: ignore[method-assign]
            "ready", "Ready", "Serving", "", requeue_after=s or r.resync_seconds(ctx)
        )
        for i in range(count - 1):
            reconciler(others, ctx(f"other-{i}"))
        assert reconciler(aliased, ctx("md")).requeue_after == wanted, (count, others.model, sooner)


def test_a_model_deployments_resync_and_its_re_apply_follow_the_paced_period(clock) -> None:
    """With 1,000 ModelDeployments at 2 resyncs a second, each asks to be run again after about 500 s
    (not 300), and a reconcile 400 s after the last apply (a child's poke) re-applies nothing unchanged;
    one 600 s after does. With one object, 400 s is past its period of 300: it re-applies."""
    applied: list[str] = []

    class Applier:
        def apply(self, manifest: dict) -> dict:
            applied.append(manifest["metadata"]["name"])
            return manifest

    def ctx(uid: str) -> Context:
        body = {"metadata": {"name": uid, "namespace": "ns", "uid": uid}}
        return Context(body=body, applier=Applier(), logger=logging.getLogger("test"))  # type: ignore[arg-type]

    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "ns"}}
    for count, at, again in ((1000, 400, False), (1000, 600, True), (1, 400, True)):
        reconciler = Reconciler(ServingSettings(resync_seconds=300, resync_rate=2))
        for i in range(count - 1):
            reconciler.resync_seconds(ctx(f"other-{i}"))
        assert reconciler.resync_seconds(ctx("md")) == max(300, count / 2)
        applied.clear()
        reconciler.apply(ctx("md"), [service])
        clock[0] += at
        for i in range(count - 1):  # the others go on asking
            reconciler.resync_seconds(ctx(f"other-{i}"))
        reconciler.apply(ctx("md"), [service])
        assert applied == ["svc", "svc"] if again else ["svc"], (count, at)


def test_objects_waiting_to_begin_count_towards_the_resync_period(clock, monkeypatch) -> None:
    """At a mass create, the objects the backlog holds not begun yet count as objects that will ask:
    the first of 1,000 created at once is given 500 s at 2 resyncs a second (1 counted + 999 waiting),
    not the 300 s of one object; once they are begun (none waiting) each counts by its own asking."""
    from kopf._cogs.structs import references

    from llmops.api import MODEL_DEPLOYMENT
    from llmops.operators import backlog

    monkeypatch.setattr(backlog, "_backlogs", {})  # no other test's watcher counted
    pacer = pacing.ResyncPacer()
    assert pacer.period("uid-0", 300, 2, waiting=999) == 500
    assert pacer.period("uid-0", 300, 2) == 300  # nothing waiting: the one object counted

    def ctx(uid: str) -> Context:
        body = {"metadata": {"name": uid, "namespace": "ns", "uid": uid}}
        return Context(body=body, applier=None, logger=logging.getLogger("test"))  # type: ignore[arg-type]

    def added(uid: str) -> dict:
        return {"type": "ADDED", "object": {"metadata": {"uid": uid, "name": uid, "namespace": "ns"}}}

    reconciler = Reconciler(ServingSettings(resync_seconds=300, resync_rate=2))
    resource = references.Resource("llmops.io", "v1alpha1", MODEL_DEPLOYMENT.plural)
    with backlog.watching(resource, "ns", limit=1) as line:
        assert line.admit(added("md")) is not None  # begun
        for i in range(999):
            assert line.admit(added(f"other-{i}")) is None  # waiting for a place
        line.admit({"type": "MODIFIED", "object": {"metadata": {"uid": "x", "name": "x"}}})  # a change
        assert backlog.not_begun(MODEL_DEPLOYMENT.plural) == 999 and backlog.not_begun("trainingjobs") == 0
        assert reconciler.resync_seconds(ctx("md")) == 500
        settings = reconciler.current_settings()  # alias polls: 30 s at 10 a second, 1,000 / 10 here
        assert reconciler.alias_poll_seconds(ctx("md")) == max(
            settings.alias_poll_seconds, 1000 / settings.alias_poll_rate
        )
    assert backlog.not_begun(MODEL_DEPLOYMENT.plural) == 0  # the watcher gone
    assert reconciler.resync_seconds(ctx("md")) == 300
