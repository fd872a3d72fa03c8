"""The shared reconcile path (llmops/operators/runtime.py): the kind gets its status parsed, the status is
written whole, and the runtime posts the Events of the shared policy (llmops/operators/events.py), nothing
for a kind without a policy."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
import yaml

from llmops.api import TRAINING_JOB
from llmops.api.common import Status
from llmops.api.trainingjob import TrainingJobStatus
from llmops.operators import pacing, runtime
from llmops.operators.events import Announcements
from llmops.operators.outcome import Outcome
from llmops.operators.runtime import Context, Kind

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
SPEC = yaml.safe_load((Path(__file__).parents[3] / "examples" / "trainingjob-full.yaml").read_text())["spec"]
POLICY = Announcements(phases={"Running": "Started"})


class Recorder:
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.seen: list[Status] = []

    def __call__(self, spec: Any, ctx: Context) -> Outcome:
        self.seen.append(ctx.status)
        return self.outcome


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    seen: list[tuple[str, str, bool]] = []
    monkeypatch.setattr(
        Context,
        "event",
        lambda self, reason, message, warning=False, **_: seen.append((reason, message, warning)),
    )
    return seen


def body(status: dict | None = None) -> dict:
    return {
        "apiVersion": "llmops.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tiny", "namespace": "ml", "uid": "u", "generation": 2},
        "spec": SPEC,
        "status": status or {},
    }


def run(kind: Kind, obj: dict) -> dict:
    patch = kopf.Patch()
    runtime.reconcile(kind, obj, None, logging.getLogger("test"), patch)  # type: ignore[arg-type]
    return dict(patch.status)


def test_the_kind_gets_its_status_parsed_and_the_runtime_announces(events: list) -> None:
    recorder = Recorder(Outcome("stalled", "Pending", "CredentialsNotFound", "create the Secret"))
    kind = Kind(TRAINING_JOB, recorder, announcements=POLICY)
    obj = body({"phase": "Pending", "submissionId": "llmops-ml-tiny-u-g1"})
    written = run(kind, obj)
    (seen,) = recorder.seen
    assert isinstance(seen, TrainingJobStatus) and seen.submission_id == "llmops-ml-tiny-u-g1"
    assert written["phase"] == "Pending" and written["observedGeneration"] == 2
    assert events == [("CredentialsNotFound", "create the Secret", True)]
    run(kind, body(written))  # the same reason again: no second Warning
    assert len(events) == 1
    # Without a policy the kind posts its own Events: the runtime posts none.
    run(Kind(TRAINING_JOB, recorder), body())
    assert len(events) == 1


def test_a_reconcile_that_raises_is_stalled_and_tried_again_later_and_less_often(
    events: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error: Stalled (InternalError) with one Warning, and retries after 30, 60, 120...
    seconds, at most 10 minutes; not stuck for good, not a hot loop. A success starts it over."""
    monkeypatch.setattr(runtime, "INTERNAL_ERRORS", runtime.Backoff(30.0, 600.0))
    broken = True

    def reconcile(spec: Any, ctx: Context) -> Outcome:
        if broken:
            raise KeyError("a field a bug expected")
        return Outcome("ready", "Running", "Running", "")

    kind = Kind(TRAINING_JOB, reconcile)
    obj, waits = body(), []
    for _ in range(8):
        patch = kopf.Patch()
        waits.append(runtime.reconcile(kind, obj, None, logging.getLogger("test"), patch))  # type: ignore[arg-type]
        obj = body(dict(patch.status))
    stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"], obj["status"]["phase"]) == (
        "True",
        "InternalError",
        "Failed",
    )
    assert waits == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0, 600.0]
    assert events == [("InternalError", "internal error (KeyError); see the operator log", True)]
    broken = False
    run(kind, obj)  # it works again: the next failure waits 30 s
    broken = True
    assert runtime.reconcile(kind, obj, None, logging.getLogger("test"), kopf.Patch()) == 30.0  # type: ignore[arg-type]


def test_an_event_the_policy_cannot_compose_is_an_internal_error_retried_paced(
    events: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a kind's Event policy (its `transitions`) is stalled and tried again after the
    internal errors' wait, as a bug in the reconcile is; it does not escape to kopf's own backoff.
    No Event of the outcome whose status was not written goes out (nor again at each retry)."""
    monkeypatch.setattr(runtime, "INTERNAL_ERRORS", runtime.Backoff(30.0, 600.0))

    def transitions(before: Any, after: dict) -> list:
        raise KeyError("a field the policy expected")

    kind = Kind(
        TRAINING_JOB,
        Recorder(Outcome("ready", "Running", "Running", "")),
        announcements=Announcements(phases={"Running": "Started"}, transitions=transitions),
    )
    obj, waits = body({"phase": "Pending"}), []
    for _ in range(3):
        patch = kopf.Patch()
        waits.append(runtime.reconcile(kind, obj, None, logging.getLogger("test"), patch))  # type: ignore[arg-type]
        obj = body(dict(patch.status))
    assert waits == [30.0, 60.0, 120.0]
    stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InternalError")
    assert events == [("InternalError", "internal error (KeyError); see the operator log", True)]


def test_a_child_re_runs_its_parent_when_its_fingerprint_changes_or_it_is_deleted(monkeypatch) -> None:
    """The child watch (`_watch_child`): the initial listing only records; an event whose fingerprint
    differs from the last one asks for the parent's reconcile, one that does not asks for nothing; a
    child that counts only by its existence asks only when it is deleted."""
    from llmops.operators.modeldeployment import make_kind

    monkeypatch.setattr(runtime, "CHILD_WATCHES", {})  # this test's watches only
    kind = make_kind()
    registry = kopf.OperatorRegistry()
    requeue = runtime.Requeue(kind.resource)
    for child in kind.children[:2]:  # Deployments (their readiness) and Services (their existence)
        runtime._watch_child(kind, child, requeue, registry)
    handlers = {h.id: h.fn for h in registry._watching.get_all_handlers()}
    label = {"llmops.io/modeldeployment": "md"}

    def event(plural: str, kind: str, type: str | None, uid: str, **status: int) -> int:
        body = {"kind": kind, "metadata": {"uid": uid, "namespace": "ns", "name": uid, "labels": label}}
        if status:
            body["spec"], body["status"] = {"replicas": 1}, status
        asyncio.run(handlers[f"modeldeployments-child-{plural}"](event={"type": type}, body=body))
        asked = requeue.pending()
        requeue._due.clear()
        return asked

    assert event("deployments", "Deployment", None, "d1", readyReplicas=1) == 0  # the listing records
    assert event("deployments", "Deployment", "MODIFIED", "d1", readyReplicas=1) == 0
    assert event("deployments", "Deployment", "MODIFIED", "d1", readyReplicas=0) == 1
    assert event("deployments", "Deployment", "ADDED", "d2") == 0  # no status yet: nothing to read
    assert event("deployments", "Deployment", "MODIFIED", "d2", readyReplicas=1, replicas=1) == 1
    assert event("deployments", "Deployment", "DELETED", "d2") == 1
    assert event("services", "Service", "ADDED", "s1") == 0
    assert event("services", "Service", "MODIFIED", "s1") == 0
    assert event("services", "Service", "DELETED", "s1") == 1

    # The Deployments' views (ChildViews, which the reconcile reads): kept from every event, dropped
    # with the Deployment; a state the reconcile recorded from its own apply pokes no one when the
    # watch brings it.
    views = kind.children[0].views
    assert views is not None and views.get("ns", "d1").status[2] == 0 and views.get("ns", "d2") is None
    applied = {
        "metadata": {"uid": "d1", "namespace": "ns", "name": "d1", "labels": label, "generation": 2},
        "spec": {"replicas": 1},
        "status": {"readyReplicas": 1},
    }
    views.note(applied)  # the reconcile's apply answered
    assert event("deployments", "Deployment", "MODIFIED", "d1", readyReplicas=0) == 0  # older: kept
    assert views.get("ns", "d1").generation == 2
    asyncio.run(handlers["modeldeployments-child-deployments"](event={"type": "MODIFIED"}, body=applied))
    assert requeue.pending() == 0  # the state the reconcile already read


def test_child_views_keep_the_newest_state_of_each_child() -> None:
    """ChildViews: the watch (`record`) replaces a view unless that view's generation is newer; an API
    answer (`note`) only when there is none, it is of another uid, or its generation is newer (an
    answer can be older than an event already recorded); a deleted uid is refused for a while, so a late
    answer does not bring it back; a deletion drops only the view of its own uid."""
    from llmops.operators.modeldeployment.observe import DeploymentView
    from llmops.operators.views import ChildViews

    views = ChildViews(DeploymentView.of)

    def body(uid: str, generation: int, ready: int) -> dict:
        meta = {"uid": uid, "namespace": "ns", "name": "d", "generation": generation}
        return {"metadata": meta, "spec": {"replicas": 1}, "status": {"readyReplicas": ready}}

    def ready() -> int | None:
        view = views.get("ns", "d")
        return None if view is None else view.status[2]

    assert views.get("ns", "d") is None
    before, now = views.record(body("a", 2, 0))
    assert before is None and now is not None and now.generation == 2
    before, now = views.record(body("a", 1, 1))  # older: the newer view stays
    assert before == now and views.get("ns", "d").generation == 2 and ready() == 0
    views.record(body("a", 2, 1))  # the watch, the same generation: a newer status
    assert ready() == 1
    views.note(body("a", 2, 0))  # an answer of that generation may be older than the event: ignored
    assert ready() == 1
    views.note(body("a", 3, 0))  # an apply's answer with a new generation: ahead of its event
    assert views.get("ns", "d").generation == 3
    views.record(body("a", 2, 1))  # the watch catching up with older events
    assert views.get("ns", "d").generation == 3

    assert views.forget(body("b", 9, 0)) is None and views.get("ns", "d") is not None  # another uid
    assert views.forget(body("a", 3, 0)).uid == "a" and views.get("ns", "d") is None
    views.note(body("a", 3, 0))  # an answer that arrives after the deletion
    assert views.get("ns", "d") is None
    assert views.record(body("a", 3, 0)) == (None, None)
    views.note(body("c", 1, 0))  # made again, another uid: its generation starts over
    assert views.get("ns", "d").uid == "c" and len(views) == 1
    views.discard("ns", "d")  # the reconcile deleted it
    assert views.get("ns", "d") is None
    views.note(body("c", 1, 0))
    assert views.get("ns", "d") is None and len(views) == 0
    views.DELETED_TTL = 0.0  # the refusal is kept for a while only
    views.note(body("c", 1, 0))
    assert views.get("ns", "d").uid == "c"


def test_child_watches_are_filtered_by_the_apiserver_unless_another_kind_shares_the_resource() -> None:
    """Every child resource of one kind is listed and watched with that kind's label as the selector; a
    RetrainPolicy's TrainingJobs (a kind's own resource too) and a resource two kinds watch get none."""
    from llmops.operators.main import default_kinds
    from llmops.operators.modeldeployment import KIND as MD

    kinds = default_kinds()
    selectors = runtime.child_selectors(kinds)
    assert selectors[("apps", "v1", "deployments")] == "llmops.io/modeldeployment"
    assert selectors[("", "v1", "services")] == "llmops.io/modeldeployment"
    assert selectors[("ray.io", "v1", "rayjobs")] == "llmops.io/trainingjob"
    assert ("llmops.io", "v1alpha1", "trainingjobs") not in selectors
    assert len(selectors) == len(MD.children) + 1
    twice = Kind(resource=TRAINING_JOB, reconcile=lambda spec, ctx: None, children=MD.children[:1])
    assert ("apps", "v1", "deployments") not in runtime.child_selectors([*kinds, twice])


def test_retries_of_many_objects_at_once_are_paced_and_clocks_are_not(
    events: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 objects stalled at once (one missing Secret, say) retry at Pace.retry_rate a second together,
    not every 60 s each (about 17 a second, each a poke and a reconcile): past 300 objects each one
    waits objects ÷ 5 s. The same for a registry or Ray that does not answer, for an unexpected error's
    backoff and for an API error that heals, all in one count per kind. A clock the kind waits on (a
    canary step, a resync, a retention sweep) is kept as asked, however many objects wait on one,
    even a stalled object's; a retry is never paced past a clock the object waits on besides; and an
    object that no longer retries stops counting."""
    monkeypatch.setattr(runtime, "INTERNAL_ERRORS", runtime.Backoff(30.0, 600.0))
    assert runtime.pace().retry_rate == 5.0
    retry = Outcome("stalled", "Pending", "CredentialsNotFound", "", requeue_after=60.0, retry=True)
    clock = Outcome("reconciling", "Running", "Running", "", requeue_after=60.0)
    answers: dict[str, Any] = {}

    def reconcile(spec: Any, ctx: Context) -> Outcome:
        answer = answers[ctx.body["metadata"]["uid"]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def waits(kind: Kind, answer: Any, uids: range, prefix: str = "o") -> list[float | None]:
        seen = []
        for i in uids:
            obj = body()
            obj["metadata"]["uid"] = uid = f"{prefix}-{i}"
            answers[uid] = answer
            try:
                seen.append(runtime.reconcile(kind, obj, None, logging.getLogger("test"), kopf.Patch()))  # type: ignore[arg-type]
            except kopf.TemporaryError as e:
                seen.append(e.delay)
        return seen

    kind, other = Kind(TRAINING_JOB, reconcile), Kind(TRAINING_JOB, reconcile)
    stalled = waits(kind, retry, range(1000))
    assert stalled[:300] == [60.0] * 300 and stalled[300] == 301 / 5.0 and stalled[-1] == 1000 / 5.0
    assert len(kind.retrying) == 1000
    # Another kind counts its own, while this one holds 1,000.
    assert other.retrying is not kind.retrying and waits(other, retry, range(1)) == [60.0]
    # Those still stalled, reconciled again, keep the period of the 1,000 (and no more).
    assert waits(kind, retry, range(10)) == [200.0] * 10
    # ...but never past a clock they wait on besides (a retention sweep, an alias poll in 100 s).
    assert waits(kind, retry.sooner(100.0), range(10, 20)) == [100.0] * 10
    # A clock is kept, whatever the count, a stalled object's too (a failed run's retention sweep); and
    # the objects that now answer with a clock no longer count as retrying.
    stalled_clock = Outcome("stalled", "Failed", "TrainingFailed", "", requeue_after=3600.0)
    assert set(waits(kind, clock, range(500))) == {60.0}
    assert set(waits(kind, stalled_clock, range(500, 1000))) == {3600.0}
    assert len(kind.retrying) == 0
    # Every reason to retry joins the one count, each stretched past its wait times 5: the registry
    # does not answer (20 s: 100), a bug (30 s first: 150), an API error that heals (kopf tries again
    # after 10 s: 50).
    unavailable = Outcome("reconciling", "Pending", "RegistryUnavailable", "", requeue_after=20.0, retry=True)
    registry_down = waits(kind, unavailable, range(150))
    assert registry_down[:100] == [20.0] * 100 and registry_down[-1] == 150 / 5.0
    bugs = waits(kind, KeyError("a field a bug expected"), range(150, 200))
    assert bugs[0] == 151 / 5.0 and bugs[-1] == 200 / 5.0
    healing = runtime.kube.ApiError(500, "InternalError", "etcdserver: leader changed")
    healed = waits(kind, healing, range(200, 250))
    assert healed[0] == 201 / 5.0 and healed[-1] == 250 / 5.0 and len(kind.retrying) == 250


def test_polls_of_many_objects_are_paced_in_their_own_count_and_never_past_a_clock(
    events: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 TrainingJobs running at once, each reading its run's progress every 10 s (a poll: a poke,
    a reconcile and a read of the Ray job's API each), would be 100 polls a second: past 50 objects
    each one polls every objects ÷ Pace.poll_rate (5) seconds, so 1,000 poll every 200 s. Polls and retries
    are counted apart (a stalled object's retry does not wait for the polls); a poll is never paced
    past a clock the object waits on besides (a RetrainPolicy's next schedule time); and an object
    that no longer polls (its run finished) stops counting."""
    assert runtime.pace().poll_rate == 5.0
    # The pacer's clock stands still: a slow machine must not make it forget objects (after twice
    # their period) between these reconciles.
    monkeypatch.setattr(pacing, "time", SimpleNamespace(monotonic=lambda: 1000.0))
    poll = Outcome("reconciling", "Running", "Running", "", requeue_after=10.0, poll=True)
    retry = Outcome("stalled", "Pending", "CredentialsNotFound", "", requeue_after=60.0, retry=True)
    done = Outcome("ready", "Succeeded", "Succeeded", "", requeue_after=3600.0)  # a retention sweep
    answers: dict[str, Outcome] = {}
    kind = Kind(TRAINING_JOB, lambda spec, ctx: answers[ctx.body["metadata"]["uid"]])

    def waits(answer: Outcome, uids: range) -> list[float | None]:
        seen = []
        for i in uids:
            obj = body()
            obj["metadata"]["uid"] = uid = f"o-{i}"
            answers[uid] = answer
            seen.append(runtime.reconcile(kind, obj, None, logging.getLogger("test"), kopf.Patch()))  # type: ignore[arg-type]
        return seen

    polled = waits(poll, range(1000))
    assert polled[:50] == [10.0] * 50 and polled[50] == 51 / 5.0 and polled[-1] == 1000 / 5.0
    assert (len(kind.polling), len(kind.retrying)) == (1000, 0)
    # A retry is counted with the retries only: one of them stalled keeps its 60 s, and no longer polls.
    assert waits(retry, range(999, 1000)) == [60.0]
    assert (len(kind.polling), len(kind.retrying)) == (999, 1)
    # Those still running keep the period of the 999; never past a clock they wait on besides.
    assert waits(poll, range(10)) == [999 / 5.0] * 10
    assert waits(poll.sooner(30.0), range(10, 20)) == [30.0] * 10
    # A clock sooner than the poll is a clock: kept as asked.
    assert waits(poll.sooner(5.0), range(20, 30)) == [5.0] * 10
    # Finished: no longer polling, no longer counted; the next polls keep their 10 s.
    assert set(waits(done, range(1000))) == {3600.0} and len(kind.polling) == 0
    assert waits(poll, range(2000, 2010)) == [10.0] * 10


def test_the_retry_and_poll_rates_are_operator_settings(
    events: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLMOPS_RETRY_RATE and LLMOPS_POLL_RATE (the chart's workloads.retryRate, pollRate) set the
    pace of every kind's retries and polls: at 2 a second, 1,000 stalled objects retry every 500 s
    and 1,000 polling ones poll every 500 s; past 20 a second, 1,000 retry every 60 s (their own
    wait). Unset or blank: 5 and 5. Anything else but a number above 0 is refused, naming the
    variable."""
    assert runtime.Pace.from_env({}) == runtime.Pace(retry_rate=5.0, poll_rate=5.0)
    chosen = runtime.Pace.from_env({"LLMOPS_RETRY_RATE": "2", "LLMOPS_POLL_RATE": "2.0"})
    assert chosen == runtime.Pace(retry_rate=2.0, poll_rate=2.0)
    for name, what in (("LLMOPS_RETRY_RATE", "retries of a kind"), ("LLMOPS_POLL_RATE", "polls of a kind")):
        for value in ("0", "-5", "nan", "often"):
            with pytest.raises(ValueError, match=f"^{name}='{value}': {what} a second, a number above 0$"):
                runtime.Pace.from_env({name: value})
    monkeypatch.setattr(pacing, "time", SimpleNamespace(monotonic=lambda: 1000.0))  # no forgetting
    retry = Outcome("stalled", "Pending", "CredentialsNotFound", "", requeue_after=60.0, retry=True)
    poll = Outcome("reconciling", "Running", "Running", "", requeue_after=10.0, poll=True)

    def last_wait(pace: runtime.Pace, answer: Outcome) -> float | None:
        monkeypatch.setattr(runtime, "_pace", pace)
        kind = Kind(TRAINING_JOB, lambda spec, ctx: answer)
        wait = None
        for i in range(1000):
            obj = body()
            obj["metadata"]["uid"] = f"o-{i}"
            wait = runtime.reconcile(kind, obj, None, logging.getLogger("test"), kopf.Patch())  # type: ignore[arg-type]
        return wait

    assert last_wait(chosen, retry) == 1000 / 2.0 and last_wait(chosen, poll) == 1000 / 2.0
    assert last_wait(runtime.Pace(retry_rate=20.0), retry) == 60.0
    assert last_wait(runtime.Pace(poll_rate=200.0), poll) == 10.0
    monkeypatch.setattr(runtime, "_pace", None)
    monkeypatch.setenv("LLMOPS_RETRY_RATE", "4")
    assert runtime.pace().retry_rate == 4.0  # read from the environment at first use


def test_the_sooner_of_a_clock_and_a_retry_says_which_it_is_and_keeps_the_clock() -> None:
    """`Outcome.sooner`: the earlier wait sets `requeue_after` and `retry`; a retry that comes first
    keeps the soonest clock beside it (`clock`), which the runtime's pacing does not pass."""
    retry = Outcome("stalled", "Pending", "CredentialsNotFound", "", requeue_after=60.0, retry=True)
    clock = Outcome("reconciling", "Running", "Running", "", requeue_after=60.0)
    assert retry.sooner(30.0) == dataclasses.replace(retry, requeue_after=30.0, retry=False, clock=None)
    assert retry.sooner(90.0) == dataclasses.replace(retry, clock=90.0)
    assert retry.sooner(90.0).sooner(75.0).clock == 75.0 and retry.sooner(90.0).sooner(120.0).clock == 90.0
    assert retry.sooner(60.0).retry is False  # a tie: the clock
    assert clock.sooner(10.0, retry=True) == dataclasses.replace(
        clock, requeue_after=10.0, retry=True, clock=60.0
    )
    assert clock.sooner(90.0) == clock
    # A poll (Outcome.poll) is paced like a retry, in its own count: it keeps the clock it came before,
    # a sooner clock takes its place, a tie goes to the clock, a retry before it is a retry.
    poll = dataclasses.replace(clock, requeue_after=10.0, poll=True)
    assert poll.sooner(30.0) == dataclasses.replace(poll, clock=30.0)
    assert poll.sooner(5.0) == dataclasses.replace(poll, requeue_after=5.0, poll=False)
    assert poll.sooner(10.0).poll is False
    assert poll.sooner(5.0, retry=True) == dataclasses.replace(
        poll, requeue_after=5.0, retry=True, poll=False
    )
    assert poll.sooner(10.0, retry=True) == poll  # a tie of a poll and a retry: the poll
    assert Outcome("ready", "Ready", "Ready", "").sooner(45.0).requeue_after == 45.0


def test_each_kinds_failures_are_marked_as_retries_and_its_clocks_are_not() -> None:
    """The outcomes that look again at something missing, refused or not answering say `retry`; those
    that wait on a clock do not."""
    from llmops.operators.modeldeployment import reconcile as md
    from llmops.operators.modelretirement import fold as retirement
    from llmops.operators.retrainpolicy import fold as retrain
    from llmops.operators.trainingjob import reconcile as tj

    assert md._stalled("VersionNotFound", "").retry
    assert tj._waiting("CredentialsNotFound", "").retry
    running = Outcome("reconciling", "Running", "Training", "")
    assert not tj._requeued(running, {"Running": 10.0}).retry
    unreadable = dataclasses.replace(running, reason=tj.Reason.REPORT_UNAVAILABLE)
    assert tj._requeued(unreadable, {"Running": 10.0}).retry
    assert (
        retirement.stalled("StorageRefused", "").retry and retrain.stalled("DeploymentNotFound", "", 60).retry
    )
    assert retirement.running("Archive", "", {}, requeue=30.0, retry=True).retry
    assert not retirement.running("Drain", "", {}, requeue=retirement.POLL_SECONDS).retry


def test_a_finalizers_retries_are_paced_with_the_kinds_others() -> None:
    """A kind's clean-up asks for another try with kopf.TemporaryError (the TrainingJob's, while the
    Ray cluster it must stop a job on does not answer: every 10 s). 100 objects deleted at once, all
    waiting on one cluster, come back at Pace.retry_rate a second together, not all every 10 s; a spec that
    does not parse has nothing to clean up; kopf's count of tries reaches the kind."""
    tries: list[int] = []

    def cleanup(spec: Any, ctx: Context) -> None:
        tries.append(ctx.retry)
        raise kopf.TemporaryError("Ray at http://ray:8265 did not answer", delay=10)

    kind = Kind(TRAINING_JOB, Recorder(Outcome("ready", "Succeeded", "Succeeded", "")), finalize=cleanup)
    delays = []
    for i in range(100):
        obj = body()
        obj["metadata"]["uid"] = f"d-{i}"
        with pytest.raises(kopf.TemporaryError) as raised:
            runtime.finalize(kind, obj, None, logging.getLogger("test"), retry=3)  # type: ignore[arg-type]
        delays.append(raised.value.delay)
    assert delays[:50] == [10.0] * 50 and delays[50] == 51 / 5.0 and delays[-1] == 100 / 5.0
    assert "did not answer" in str(raised.value) and set(tries) == {3}
    malformed = {**body(), "spec": {"runtime": "not an object"}}
    runtime.finalize(kind, malformed, None, logging.getLogger("test"), retry=0)  # type: ignore[arg-type]
    assert len(tries) == 100
