"""Objects kopf has not begun wait outside it, compressed (operators.backlog), through kopf's own
watcher and workers; only kopf's listing and watch (`continuous_watch`, the HTTP side) is faked."""

from __future__ import annotations

import asyncio
import inspect

import kopf
import pytest
from kopf._cogs.clients import errors, watching
from kopf._cogs.structs import references
from kopf._core.reactor import queueing

from llmops.operators import backlog
from llmops.operators import main as operator_main
from llmops.operators.backlog import Backlog
from llmops.operators.main import wrap_list_and_watch

RESOURCE = references.Resource("llmops.io", "v1alpha1", "modeldeployments")


@pytest.fixture(autouse=True)
def fresh_wraps(monkeypatch) -> None:
    """Each test starts from no resource gated, none direct, none deletions-only and no child watch
    (an operator configured earlier in this process leaves its own); a test sets what it needs."""
    from llmops.operators import runtime

    monkeypatch.setattr(runtime, "CHILD_WATCHES", {})
    for name in ("GATED", "DIRECT", "DELETIONS_ONLY"):
        monkeypatch.setattr(operator_main, name, set())


def event(kind: str | None, uid: str, version: str = "1", **spec: object) -> dict:
    return {
        "type": kind,
        "object": {"metadata": {"uid": uid, "name": uid, "resourceVersion": version}, "spec": dict(spec)},
    }


def waiting(name: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("llmops_operator_objects_waiting", {"resource": name})


def test_the_line_keeps_its_order_and_each_objects_newest_event() -> None:
    line = Backlog(limit=2, name="line-test")
    assert line.admit(event(None, "a")) == event(None, "a")
    assert line.admit(event(None, "b")) == event(None, "b")
    assert line.admit(event(None, "c", x=1)) is None  # two have workers: held
    assert line.admit(event(None, "d")) is None
    assert line.admit(event("MODIFIED", "c", "2", x=2)) is None  # replaces c's, in c's place
    assert line.admit(event("MODIFIED", "a", "2")) == event("MODIFIED", "a", "2")  # a has a worker
    assert line.admit(event("ADDED", "e")) is None
    assert line.admit(event("DELETED", "d", "2")) is None  # d's deletion waits in d's place
    assert line.admit(event("DELETED", "b", "2")) == event("DELETED", "b", "2")  # b has a worker
    assert line.admit({"type": "BOOKMARK", "object": {"metadata": {"uid": "x"}}}) is not None
    assert list(line.fresh) == ["c", "d", "e"] and not line.changed and line.live == {"a", "b"}
    assert waiting("line-test") == 3
    assert line.release() is None  # no place
    assert line.admit(watching.Bookmark.LISTED) is watching.Bookmark.LISTED
    line.finished("b")
    # c was listed (type None: kopf resumes it), then modified while it waited: resumed at its newest,
    # marked as changed since its listing (for a parent that watches it as a child)
    assert line.release() == {**event(None, "c", "2", x=2), backlog.CHANGED_SINCE_LISTED: True}
    assert line.release() is None
    line.finished("zzz")  # a worker this backlog never counted
    line.finished("a")
    assert line.release() == event("DELETED", "d", "2")  # listed, then deleted: kopf gets the deletion
    assert line.release() is None
    line.finished("d")
    assert line.release() == event("ADDED", "e")
    assert len(line) == 0 and line.live == {"c", "e"}
    assert waiting("line-test") == 0


def test_changes_of_objects_kopf_has_had_take_turns_with_the_objects_not_begun() -> None:
    """Two lines: objects not begun (listed or ADDED) and changes or deletions of objects kopf has
    already had (a MODIFIED or DELETED of an object not held). While both hold something, places go
    to them in turn, each line oldest first; a newer event stays in its object's line and place."""
    line = Backlog(limit=1, name="turns-test")
    assert line.admit(event("ADDED", "a")) == event("ADDED", "a")  # a place free: passes
    for uid in ("b", "c", "d", "e"):
        assert line.admit(event("ADDED", uid)) is None
    assert line.admit(event("MODIFIED", "x", "5")) is None  # had before: a change
    assert line.admit(event("MODIFIED", "b", "2")) is None  # b not begun: still in its place
    assert line.admit(event("DELETED", "y", "7")) is None
    assert line.admit(event("MODIFIED", "x", "6")) is None  # x's newer event, in x's place
    assert line.admit(event(None, "z")) is None  # listed (the stream began again): not begun
    assert list(line.fresh) == ["b", "c", "d", "e", "z"] and list(line.changed) == ["x", "y"]
    assert len(line) == 7 and waiting("turns-test") == 7
    order = []
    for uid in ("a", "x", "b", "y", "c", "d", "e"):
        line.finished(uid)
        passed = line.release()
        order.append(
            (
                passed["type"],
                passed["object"]["metadata"]["uid"],
                passed["object"]["metadata"]["resourceVersion"],
            )
        )
    assert order == [
        ("MODIFIED", "x", "6"),
        ("MODIFIED", "b", "2"),  # ADDED, then modified while it waited: its newest, from its place
        ("DELETED", "y", "7"),
        ("ADDED", "c", "1"),
        ("ADDED", "d", "1"),  # the changes' line empty: the other goes on alone
        ("ADDED", "e", "1"),
        (None, "z", "1"),
    ]
    assert len(line) == 0 and waiting("turns-test") == 0


def test_a_line_of_changes_that_keeps_filling_does_not_starve_the_objects_not_begun() -> None:
    """Each time a place frees, a new change of an object kopf has had arrives: the objects not
    begun still get every second place."""
    line = Backlog(limit=1, name="starve-test")
    line.admit(event("ADDED", "a"))
    for i in range(3):
        line.admit(event("ADDED", f"new-{i}"))
    passed, live = [], "a"
    for i in range(6):
        line.admit(event("MODIFIED", f"had-{i}", "2"))
        line.finished(live)
        live = line.release()["object"]["metadata"]["uid"]
        passed.append(live)
    assert passed == ["had-0", "new-0", "had-1", "new-1", "had-2", "new-2"]
    assert list(line.changed) == ["had-3", "had-4", "had-5"] and not line.fresh


def run_watcher(monkeypatch, source, processor, limit: int, until, resource=RESOURCE) -> dict:
    """kopf's own `watcher` (its workers, its scheduler of `limit` places) of `resource` over `source`,
    our wrap of its listing and workers in between, until `until()`; returns what kopf held at most."""
    most = {"streams": 0}
    kopfs_worker = inspect.unwrap(queueing.worker)

    async def counted(**kwargs):
        most["streams"] = max(most["streams"], len(kwargs["streams"]))
        await kopfs_worker(**kwargs)

    monkeypatch.setattr(watching, "continuous_watch", source)
    monkeypatch.setattr(queueing, "worker", counted)  # the wrap then wraps this one
    monkeypatch.setattr(queueing, "watcher", inspect.unwrap(queueing.watcher))  # kopf's, wrapped below
    monkeypatch.setattr(backlog, "_backlogs", {})
    monkeypatch.setattr(operator_main, "GATED", {(resource.group, resource.version, resource.plural)})
    wrap_list_and_watch()
    settings = kopf.OperatorSettings()
    settings.queueing.worker_limit = limit
    settings.queueing.idle_timeout = 0.01
    settings.persistence.consistency_timeout = 60
    settings.watching.reconnect_backoff = 0

    async def main() -> None:
        task = asyncio.create_task(
            queueing.watcher(namespace=None, settings=settings, resource=resource, processor=processor)
        )

        async def done() -> None:
            while not until():
                await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(done(), 30)  # a stalled line fails here, not at pytest's timeout
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # the watcher gone, nothing of the backlog reads on
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "llmops backlog reader"]
        assert backlog.of(resource, None) is None

    asyncio.run(main())
    return most


CHILDREN = references.Resource("networking.k8s.io", "v1", "networkpolicies")


@pytest.mark.parametrize("resource", [RESOURCE, CHILDREN], ids=["own-kind", "child"])
def test_a_start_of_many_objects_queues_at_most_the_limit_inside_kopf(monkeypatch, resource) -> None:
    """300 objects listed at once, 10 places: kopf never holds more than 10 objects' streams (without
    the backlog: all 300), every object is processed once, in listing order, as listed (type None),
    and the stream was read to its end at once while they waited (the watch is not held up). The same
    for any resource gated, a child's too (configure gates only the kinds' own: the other children's
    events go straight to their watches)."""
    n, limit = 300, 10
    read = []

    async def source(**kwargs):
        for i in range(n):
            read.append(i)
            yield event(None, f"md-{i:03}", spec_field=i)
        yield watching.Bookmark.LISTED
        await asyncio.Event().wait()  # the watch: nothing more

    seen: list[tuple[str | None, str]] = []
    read_when_begun: list[int] = []
    held: list[int] = []

    async def processor(*, raw_event, **_):
        read_when_begun.append(len(read))
        line = backlog.of(resource, None)
        held.append(len(line) if line is not None else 0)
        seen.append((raw_event["type"], raw_event["object"]["metadata"]["uid"]))
        await asyncio.sleep(0.001)
        return None

    most = run_watcher(monkeypatch, source, processor, limit, until=lambda: len(seen) == n, resource=resource)
    assert seen == [(None, f"md-{i:03}") for i in range(n)]
    assert most["streams"] <= limit
    assert read_when_begun[limit] == n  # the 11th begun after the whole stream was read
    assert max(held) >= n - 2 * limit


def test_a_worker_waiting_for_its_own_patch_gets_it_past_the_line(monkeypatch) -> None:
    """kopf's worker, having patched its object, waits for that patch to come back by the watch (its
    consistency wait, 60 s here). With one place and two objects waiting, the patch's event passes the
    line at once: the first object's both events are processed before the others begin."""
    events_sent: dict[str, object] = {}

    async def source(**kwargs):
        events_sent["patch"] = asyncio.Event()
        for uid in ("a", "b", "c"):
            yield event(None, uid)
        await events_sent["patch"].wait()
        yield event("MODIFIED", "a", "2")
        await asyncio.Event().wait()

    seen: list[tuple[str | None, str]] = []

    async def processor(*, raw_event, **_):
        uid = raw_event["object"]["metadata"]["uid"]
        seen.append((raw_event["type"], uid))
        if (raw_event["type"], uid) == (None, "a"):
            events_sent["patch"].set()  # type: ignore[attr-defined]
            return "2"  # kopf waits for version 2 of `a` before its worker may end
        return None

    run_watcher(monkeypatch, source, processor, limit=1, until=lambda: len(seen) == 4)
    assert seen == [(None, "a"), ("MODIFIED", "a"), (None, "b"), (None, "c")]


def test_an_object_kopf_has_had_changed_waits_for_two_places_not_for_a_line_of_new_ones(monkeypatch) -> None:
    """kopf's watcher, one place: `old` is listed and processed; then 100 objects are created, and
    `old` changes (a child's poke, say) once the first of them has begun. Its change is processed
    second of what waited, not after the 100."""
    began = asyncio.Event()

    async def source(**kwargs):
        yield event(None, "old")
        yield watching.Bookmark.LISTED
        for i in range(100):
            yield event("ADDED", f"new-{i:03}")
        await began.wait()
        yield event("MODIFIED", "old", "2")
        await asyncio.Event().wait()

    seen: list[tuple[str | None, str]] = []

    async def processor(*, raw_event, **_):
        seen.append((raw_event["type"], raw_event["object"]["metadata"]["uid"]))
        if raw_event["object"]["metadata"]["uid"] == "new-000":
            began.set()
            await asyncio.sleep(0.05)  # the change arrives while this one holds the place
        return None

    run_watcher(monkeypatch, source, processor, limit=1, until=lambda: len(seen) == 102)
    assert seen[:4] == [(None, "old"), ("ADDED", "new-000"), ("MODIFIED", "old"), ("ADDED", "new-001")]
    assert sorted(seen[4:]) == [("ADDED", f"new-{i:03}") for i in range(2, 100)]


def test_the_streams_failure_reaches_kopf_and_the_line_is_dropped(monkeypatch, caplog) -> None:
    """An expired list (410) ends the stream as before, held objects dropped (kopf lists again and
    they come again) but for the held deletions, which pass (a listing would not bring them back);
    any other failure is raised to kopf's watcher unchanged."""
    refusal: list[BaseException] = []

    async def source(**kwargs):
        for uid in ("a", "b", "c"):
            yield event(None, uid)
        yield event("DELETED", "c", "2")
        raise refusal[0]

    monkeypatch.setattr(watching, "continuous_watch", source)
    monkeypatch.setattr(queueing, "watcher", inspect.unwrap(queueing.watcher))  # restored after
    monkeypatch.setattr(queueing, "worker", inspect.unwrap(queueing.worker))
    monkeypatch.setattr(backlog, "_backlogs", {})
    wrap_list_and_watch()
    settings = kopf.OperatorSettings()
    settings.queueing.worker_limit = 1

    async def collect() -> list:
        with backlog.watching(RESOURCE, None, 1) as line:
            lines.append(line)
            return [e async for e in watching.continuous_watch(settings=settings, resource=RESOURCE)]

    lines: list[Backlog] = []

    expired = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    refusal[:] = [errors.APIClientError(expired, status=410, headers={})]
    with caplog.at_level("WARNING"):
        got = asyncio.run(collect())
    assert got == [event(None, "a"), event("DELETED", "c", "2")]
    assert "refused as expired" in caplog.text
    line = lines[0]
    assert len(line) == 0 and line.live == {"a", "c"} and backlog.of(RESOURCE, None) is None
    assert waiting("modeldeployments") == 0

    refusal[:] = [
        errors.APIForbiddenError({"kind": "Status", "code": 403, "message": "no"}, status=403, headers={})
    ]
    with pytest.raises(errors.APIForbiddenError):
        asyncio.run(collect())


def test_kopfs_watcher_makes_its_workers_by_the_name_the_wrap_replaces() -> None:
    """kopf's orchestration starts each resource's watcher by the queueing module's `watcher`, and
    the watcher makes each object's worker by the module's `worker` (both looked up at each call),
    passing it the key (resource, uid) the backlog is told of when the worker ends."""
    from kopf._core.reactor import orchestration

    assert "coro=queueing.watcher(" in inspect.getsource(orchestration)
    source = inspect.getsource(inspect.unwrap(queueing.watcher))
    assert "coro=worker(" in source and "key=key" in source


def test_deletions_wait_in_line_and_reach_kopf(monkeypatch) -> None:
    """A namespace deleted with many objects: their DELETED events wait in line like any other (kopf
    held at most the places' streams), and kopf gets every one of them, as a deletion."""
    n, limit = 100, 5

    async def source(**kwargs):
        for i in range(n):
            yield event(None, f"md-{i:03}")
        for i in range(n):
            yield event("DELETED", f"md-{i:03}", "2")
        await asyncio.Event().wait()

    seen: list[tuple[str | None, str]] = []

    async def processor(*, raw_event, **_):
        seen.append((raw_event["type"], raw_event["object"]["metadata"]["uid"]))
        await asyncio.sleep(0.001)

    most = run_watcher(
        monkeypatch, source, processor, limit, until=lambda: sum(t == "DELETED" for t, _ in seen) == n
    )
    assert most["streams"] <= limit
    assert {uid for t, uid in seen if t == "DELETED"} == {f"md-{i:03}" for i in range(n)}


def deployment(parent: str, version: str, ready: int) -> dict:
    """A ModelDeployment's model-server Deployment, labelled as its child: `ready` replicas of 1."""
    name = f"{parent}-1-vllm"
    labels = {"llmops.io/modeldeployment": parent}
    meta = {"uid": name, "name": name, "namespace": "ns", "labels": labels, "resourceVersion": version}
    status = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}
    status |= {"readyReplicas": ready, "availableReplicas": ready}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**meta, "generation": 1},
        "spec": {"replicas": 1},
        "status": status,
    }


def kopfs_processing(registry: kopf.OperatorRegistry, resource: references.Resource):
    """kopf's own processing of each event of `resource` (its causes, its handlers' filters and
    invocation), as its orchestration hands it to the watcher, over `registry`."""
    import functools

    from kopf._core.engines import indexing
    from kopf._core.reactor import inventory, processing

    return functools.partial(
        processing.process_resource_event,
        lifecycle=kopf.lifecycles.all_at_once,
        registry=registry,
        settings=kopf.OperatorSettings(),
        indexers=indexing.OperatorIndexers(),
        memories=inventory.ResourceMemories(),
        memobase=kopf.Memo(),
        event_queue=asyncio.Queue(),
        resource=resource,
    )


def test_a_child_changed_while_the_watch_was_away_re_runs_its_parent(monkeypatch) -> None:
    """kopf lists a resource again after a gap in its watch (410: every object as type None). The child
    watch (operators.runtime) re-runs the parent of a child it had met whose state changed in the gap,
    and not the parents of children it meets for the first time (the start: kopf resumes every parent).
    Through kopf's watcher and our wrap of its listing, which hands the events to the ModelDeployment's
    child watch as the operator does (operators.main.DIRECT); only the HTTP side of the listing is
    faked."""
    from llmops.operators import runtime
    from llmops.operators.modeldeployment import make_kind

    kind = make_kind()
    registry = kopf.OperatorRegistry()
    requeue = runtime.Requeue(kind.resource)
    runtime._watch_child(kind, kind.children[0], requeue, registry)  # the Deployments
    deployments = references.Resource("apps", "v1", "deployments", kind="Deployment", namespaced=True)

    listings: list[list[dict]] = [
        [deployment("md", "1", 0)],  # the start
        [deployment("md", "2", 1), deployment("new", "3", 1)],  # after the gap
    ]
    processed: list[tuple[str | None, str, int]] = []

    async def source(**kwargs):
        listing = listings.pop(0) if listings else []
        for obj in listing:
            yield {"type": None, "object": obj}
        yield watching.Bookmark.LISTED
        if not listing:
            await asyncio.Event().wait()  # the watch: nothing more
        # else: the stream ends as after a 410 (kopf's continuous_watch returns), and kopf lists again

    # The Deployments' events go straight to the child watch (operators.main.DIRECT), as the operator
    # configures them; kopf's processing gets none.
    key = ("apps", "v1", "deployments")
    (watch,) = runtime.CHILD_WATCHES[key].values()

    async def counted(event: dict) -> None:
        await watch(event)
        processed.append((event["type"], event["object"]["metadata"]["name"], requeue.pending()))

    runtime.CHILD_WATCHES[key] = {"counted": counted}
    monkeypatch.setattr(operator_main, "DIRECT", {key})
    by_kopf: list[dict] = []

    async def processor(*, raw_event, **_):
        by_kopf.append(raw_event)

    run_watcher(monkeypatch, source, processor, 10, until=lambda: len(processed) == 3, resource=deployments)
    assert by_kopf == []
    assert processed[0] == (None, "md-1-vllm", 0)  # met at the start: recorded, no poke
    assert sorted(name for _, name, _ in processed[1:]) == ["md-1-vllm", "new-1-vllm"]
    # md's Deployment became ready in the gap; `new`'s is new to the watch: no poke for it
    assert list(requeue._due) == [("ns", "md")]


def test_a_child_of_our_own_kinds_changed_while_it_waited_re_runs_its_parent(monkeypatch) -> None:
    """A RetrainPolicy's TrainingJob, listed at a start while every place was taken and changed before
    its turn: kopf resumes it (type None) at its newest state, and its policy's child watch takes it
    for the change it is. Through kopf's watcher, the backlog and kopf's processing."""
    from llmops.operators import runtime
    from llmops.operators.retrainpolicy import make_kind

    kind = make_kind()
    registry = kopf.OperatorRegistry()
    requeue = runtime.Requeue(kind.resource)
    runtime._watch_child(kind, kind.children[0], requeue, registry)
    jobs = references.Resource("llmops.io", "v1alpha1", "trainingjobs", kind="TrainingJob", namespaced=True)
    label = {"llmops.io/retrainpolicy": "policy"}

    def job(name: str, version: str, phase: str) -> dict:
        meta = {"uid": name, "name": name, "namespace": "ns", "labels": label, "resourceVersion": version}
        return {
            "apiVersion": "llmops.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": meta,
            "spec": {},
            "status": {"phase": phase},
        }

    async def source(**kwargs):
        yield {"type": None, "object": job("busy", "1", "Running")}  # takes the one place
        yield {"type": None, "object": job("run-1", "2", "Running")}  # waits
        yield {"type": "MODIFIED", "object": job("run-1", "3", "Succeeded")}  # changed while it waits
        yield watching.Bookmark.LISTED
        await asyncio.Event().wait()

    processor = kopfs_processing(registry, jobs)
    processed: list[tuple[str | None, str, bool]] = []

    async def counted(*, raw_event, **kwargs):
        obj = raw_event["object"]["metadata"]
        if obj["name"] == "busy":
            while len(backlog.of(jobs, None)) == 0 or waiting("trainingjobs") == 0:
                await asyncio.sleep(0.01)  # until run-1 waits in line
            await asyncio.sleep(0.05)  # and its change has joined it
        got = await processor(raw_event=raw_event, **kwargs)
        processed.append((raw_event["type"], obj["name"], raw_event.get(backlog.CHANGED_SINCE_LISTED, False)))
        return got

    run_watcher(monkeypatch, source, counted, 1, until=lambda: len(processed) == 2, resource=jobs)
    assert processed == [(None, "busy", False), (None, "run-1", True)]
    assert list(requeue._due) == [("ns", "policy")]


def test_a_deletion_held_when_the_watch_expires_still_reaches_kopf(monkeypatch) -> None:
    """A child's resource listed, one place: c is deleted while it waits, then the watch expires (kopf's
    stream ends, as at a 410) and kopf lists again, without c. kopf still gets c's deletion (a parent
    watching it forgets its view and applies it again), and every object still there."""
    calls: list[int] = []

    async def source(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            for uid in ("a", "b", "c"):
                yield event(None, uid)
            yield event("DELETED", "c", "2")
            return  # the watch expired: kopf lists again
        for uid in ("a", "b"):
            yield event(None, uid, "3")
        await asyncio.Event().wait()

    seen: list[tuple[str | None, str]] = []

    async def processor(*, raw_event, **_):
        seen.append((raw_event["type"], raw_event["object"]["metadata"]["uid"]))
        await asyncio.sleep(0.01)

    run_watcher(
        monkeypatch,
        source,
        processor,
        1,
        until=lambda: ("DELETED", "c") in seen and (None, "b") in seen,
        resource=CHILDREN,
    )
    assert seen[0] == (None, "a") and ("DELETED", "c") in seen and len(calls) == 2


def test_of_a_child_that_counts_only_by_its_deletion_its_watch_gets_only_the_deletion(monkeypatch) -> None:
    """A ModelDeployment's NetworkPolicies (fingerprint `existence`: runtime.deletions_only), routed as
    the operator routes them (in both operators.main.DELETIONS_ONLY and DIRECT; run_watcher also gates
    the resource, which DIRECT comes before): a listing of 300, a new one, a status change, then a
    deletion. Its child watch gets the deletion alone and re-runs the parent; kopf's processing gets
    none of the 303 events. Without the filter the child watch would read the other 302 to no effect."""
    from llmops.operators import runtime
    from llmops.operators.modeldeployment import make_kind

    kind = make_kind()
    registry = kopf.OperatorRegistry()
    requeue = runtime.Requeue(kind.resource)
    (child,) = [c for c in kind.children if c.plural == "networkpolicies"]
    runtime._watch_child(kind, child, requeue, registry)
    policies = references.Resource(
        "networking.k8s.io", "v1", "networkpolicies", kind="NetworkPolicy", namespaced=True
    )

    def policy(i: int, version: str = "1") -> dict:
        meta = {"uid": f"np-{i}", "name": f"md-{i}-gateway", "namespace": "ns", "resourceVersion": version}
        meta["labels"] = {"llmops.io/modeldeployment": f"md-{i}"}
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta}

    async def source(**kwargs):
        for i in range(300):
            yield {"type": None, "object": policy(i)}
        yield watching.Bookmark.LISTED
        yield {"type": "ADDED", "object": policy(300)}
        yield {"type": "MODIFIED", "object": policy(7, "2")}
        yield {"type": "DELETED", "object": policy(5, "3")}
        await asyncio.Event().wait()  # the watch: nothing more

    key = ("networking.k8s.io", "v1", "networkpolicies")
    watched: list[tuple[str | None, str]] = []
    (watch_id, handler) = next(iter(runtime.CHILD_WATCHES[key].items()))

    async def counted(event: dict) -> None:
        watched.append((event["type"], event["object"]["metadata"]["name"]))
        await handler(event)

    runtime.CHILD_WATCHES[key] = {watch_id: counted}
    processed: list[dict] = []

    async def processor(*, raw_event, **_):
        processed.append(raw_event)

    assert key in runtime.deletions_only([kind]) and key in runtime.direct_children([kind])
    monkeypatch.setattr(operator_main, "DELETIONS_ONLY", {key})
    monkeypatch.setattr(operator_main, "DIRECT", {key})
    run_watcher(monkeypatch, source, processor, 10, until=lambda: bool(watched), resource=policies)
    assert watched == [("DELETED", "md-5-gateway")]
    assert processed == []
    assert list(requeue._due) == [("ns", "md-5")]  # put back by its parent's reconcile


def test_the_gate_covers_every_kinds_resources_and_not_kopfs_own_watches(monkeypatch) -> None:
    """configure gates the kinds' own resources (a RetrainPolicy's TrainingJobs too: kopf reconciles
    them), hands every other child's events straight to its watch (DIRECT), and touches neither of
    kopf's watches of CustomResourceDefinitions and Namespaces (their processing skips a listing's
    type None)."""
    from llmops.operators import retrainpolicy
    from llmops.operators.main import configure, default_kinds

    # An operator of RetrainPolicies alone watches TrainingJobs as children only: straight to the
    # watch. Configured again with every kind (as the tests do in one process), they are gated.
    configure(kopf.OperatorSettings(), None, [retrainpolicy.make_kind()])
    assert ("llmops.io", "v1alpha1", "trainingjobs") in operator_main.DIRECT
    configure(kopf.OperatorSettings(), None, default_kinds())
    gated, direct = operator_main.GATED, operator_main.DIRECT
    own = {
        ("llmops.io", "v1alpha1", "modeldeployments"),
        ("llmops.io", "v1alpha1", "trainingjobs"),
        ("llmops.io", "v1alpha1", "retrainpolicies"),
    }
    assert own <= gated and {g for g, _, _ in gated} == {"llmops.io"}
    assert {
        ("apps", "v1", "deployments"),
        ("networking.k8s.io", "v1", "networkpolicies"),
        ("ray.io", "v1", "rayjobs"),
    } <= direct
    assert not direct & gated
    assert not {g for g, _, _ in gated | direct} & {"apiextensions.k8s.io", "kopf.dev"}
    assert ("", "v1", "namespaces") not in gated | direct
    # Only deletions, of the children that count only by them: not Deployments (their readiness),
    # RayJobs (a TrainingJob's progress), nor a kind's own resource (TrainingJobs, a policy's children).
    only = operator_main.DELETIONS_ONLY
    assert {("networking.k8s.io", "v1", "networkpolicies"), ("", "v1", "services")} <= only <= direct
    assert not only & {
        ("apps", "v1", "deployments"),
        ("ray.io", "v1", "rayjobs"),
        ("llmops.io", "v1alpha1", "trainingjobs"),
    }


def test_a_childs_events_go_straight_to_its_watch_and_none_to_kopf(monkeypatch) -> None:
    """A ModelDeployment's Deployments (runtime.direct_children): a listing of 300, a bookmark, one
    made ready, one deleted, through our wrap of kopf's listing and kopf's own watcher. The child watch
    gets each event in the stream's order: every listed Deployment's view is kept with no parent re-run
    (the start), the ready one's and the deleted one's parents are re-run; kopf's processing gets none
    of them (no worker, no queue, no place per Deployment) and its watch goes on. A watch that fails on
    one event is logged, and the rest still reach the others."""
    from llmops.operators import runtime
    from llmops.operators.modeldeployment import make_kind

    kind = make_kind()
    registry = kopf.OperatorRegistry()
    requeue = runtime.Requeue(kind.resource)
    (child,) = [c for c in kind.children if c.plural == "deployments"]
    runtime._watch_child(kind, child, requeue, registry)
    failing: list[str | None] = []

    async def broken(event: dict) -> None:
        failing.append(event["type"])
        raise RuntimeError("a watch that fails")

    key = ("apps", "v1", "deployments")
    runtime.CHILD_WATCHES[key] = {"broken": broken, **runtime.CHILD_WATCHES[key]}
    deployments = references.Resource("apps", "v1", "deployments", kind="Deployment", namespaced=True)

    async def source(**kwargs):
        for i in range(300):
            yield {"type": None, "object": deployment(f"md-{i}", "1", 0)}
        yield watching.Bookmark.LISTED
        yield {"type": "MODIFIED", "object": deployment("md-7", "2", 1)}
        yield {"type": "DELETED", "object": deployment("md-5", "3", 0)}
        await asyncio.Event().wait()  # the watch: nothing more

    processed: list[dict] = []

    async def processor(*, raw_event, **_):
        processed.append(raw_event)

    monkeypatch.setattr(operator_main, "DIRECT", {key})
    run_watcher(monkeypatch, source, processor, 10, until=lambda: len(failing) == 302, resource=deployments)
    assert processed == []
    assert sorted(requeue._due) == [("ns", "md-5"), ("ns", "md-7")]
    views = child.views
    assert views is not None and views.get("ns", "md-5-1-vllm") is None
    assert views.get("ns", "md-7-1-vllm").status[2] == 1  # availableReplicas, from the MODIFIED event
    assert views.get("ns", "md-299-1-vllm") is not None
    assert failing[-2:] == ["MODIFIED", "DELETED"]
