"""bench/reconcile_scale.py's counts of progress: a `Tally` lists a resource in pages, then follows its
watch events; an expired list or watch (410) is listed again, a loaded or unreachable apiserver (5xx,
429, no answer) is watched again, and any other error ends the bench in the wait that reads the count.
The apiserver here is a stand-in that answers the pages and the watch's outcomes in order (the real
one is what the bench itself runs on)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import urllib3
from kubernetes import client

BENCH = Path(__file__).resolve().parents[2] / "bench"
RESOURCE = ("apps", "v1", "deployments")


@pytest.fixture
def scale(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("reconcile_scale", None)
    import reconcile_scale

    monkeypatch.setattr(reconcile_scale.time, "sleep", lambda _: None)
    return reconcile_scale


class Done(Exception):
    """The scripted watch's outcomes have all been given."""


def obj(name: str, rv: str, ready: bool = False) -> dict:
    return {"metadata": {"name": name, "resourceVersion": rv}, "ready": ready}


def expired(code: int = 410) -> dict:
    """The apiserver's word that a watch has expired: a 200, then this event."""
    return {
        "type": "ERROR",
        "object": {"kind": "Status", "code": code, "message": "too old resource version"},
    }


class Response:
    """A watch's streamed body (urllib3's HTTPResponse as the kubernetes client returns it with
    _preload_content=False): the events as JSON lines, in chunks that cut lines apart."""

    def __init__(self, events, chunk: int = 7) -> None:
        self.events, self.chunk, self.closed = events, chunk, False

    def stream(self, amt=None, decode_content=False):
        for event in self.events:
            if isinstance(event, Exception):  # the connection breaks here
                raise event
            data = (json.dumps(event) + "\n").encode()
            for i in range(0, len(data), self.chunk):
                yield data[i : i + self.chunk]

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


class Apiserver:
    """Lists in pages (`pages`: continue token -> items, next token, resourceVersion) and answers each
    watch with the next of `outcomes`: a list of events, or an exception to raise."""

    def __init__(self, pages: dict, outcomes: list) -> None:
        self.pages, self.outcomes = pages, outcomes
        self.asked: list[tuple] = []
        self.responses: list[Response] = []

    def list_namespaced_custom_object(self, group, version, namespace, plural, **kwargs):
        if kwargs.get("watch"):
            assert kwargs["_preload_content"] is False and kwargs["allow_watch_bookmarks"] is True
            return self.watch(kwargs["resource_version"])
        self.asked.append(("list", namespace, kwargs["limit"], kwargs["_continue"]))
        items, token, rv = self.pages[kwargs["_continue"]]
        return {"items": items, "metadata": {"resourceVersion": rv, **({"continue": token} if token else {})}}

    def watch(self, since: str) -> Response:
        self.asked.append(("watch", since))
        if not self.outcomes:
            raise Done
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        self.responses.append(Response(outcome))
        return self.responses[-1]


def started(scale, server: Apiserver):
    return scale.Tally(server, RESOURCE, "operator", lambda o: o["ready"])


def tally(scale, server: Apiserver):
    """A Tally run until the server's outcomes are spent."""
    t = started(scale, server)
    t._thread.join(10)
    assert not t._thread.is_alive()
    return t


def test_it_lists_every_page_then_follows_the_watch_from_the_lists_revision(scale) -> None:
    server = Apiserver(
        {
            None: ([obj("a", "5", True), obj("b", "6")], "after-2", "10"),
            "after-2": ([obj("c", "7", True)], None, "10"),
        },
        [
            [
                {"type": "ADDED", "object": obj("d", "11")},
                {"type": "MODIFIED", "object": obj("b", "12", True)},
                {"type": "DELETED", "object": obj("a", "13", True)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
            ],
            [{"type": "MODIFIED", "object": obj("d", "21", True)}],  # the next watch, from the bookmark's
        ],
    )
    t = tally(scale, server)
    assert isinstance(t.error, Done)
    assert t.seen == {"b": True, "c": True, "d": True}
    limit = scale.LIST_PAGE
    assert server.asked == [
        ("list", "operator", limit, None),
        ("list", "operator", limit, "after-2"),
        ("watch", "10"),
        ("watch", "20"),
        ("watch", "21"),
    ]
    assert all(r.closed for r in server.responses)


@pytest.mark.parametrize(
    "error",
    [
        client.ApiException(status=504, reason="Gateway Timeout"),
        client.ApiException(status=503, reason="Service Unavailable"),
        client.ApiException(status=429, reason="Too Many Requests"),
        urllib3.exceptions.ProtocolError("Connection broken"),
        urllib3.exceptions.ReadTimeoutError(None, "/apis", "read timed out"),
        client.ApiException(status=0, reason="SSLError"),  # how the client wraps a TLS failure
        [expired(500)],  # an error the apiserver says inside the watch's stream
    ],
)
def test_a_loaded_or_unreachable_apiserver_is_watched_again_from_the_same_revision(
    scale, capsys, error
) -> None:
    server = Apiserver(
        {None: ([obj("a", "5")], None, "10")}, [error, [{"type": "ADDED", "object": obj("b", "11")}]]
    )
    t = tally(scale, server)
    assert isinstance(t.error, Done) and set(t.seen) == {"a", "b"}
    assert server.asked == [
        ("list", "operator", scale.LIST_PAGE, None),
        ("watch", "10"),
        ("watch", "10"),
        ("watch", "11"),
    ]
    assert "watching deployments failed" in capsys.readouterr().err


def test_a_watch_broken_after_some_events_goes_on_from_the_last_one(scale, capsys) -> None:
    """Not from the list's revision again: the events taken in are not replayed."""
    broken = urllib3.exceptions.ProtocolError("Connection broken")
    server = Apiserver(
        {None: ([obj("a", "5")], None, "10")},
        [
            [{"type": "ADDED", "object": obj("b", "11")}, broken],
            [{"type": "ADDED", "object": obj("c", "12")}],
        ],
    )
    t = tally(scale, server)
    assert isinstance(t.error, Done) and set(t.seen) == {"a", "b", "c"}
    assert server.asked == [
        ("list", "operator", scale.LIST_PAGE, None),
        ("watch", "10"),
        ("watch", "11"),
        ("watch", "12"),
    ]
    assert "watching deployments failed (ProtocolError)" in capsys.readouterr().err


def test_a_listing_broken_midway_is_listed_again_from_its_first_page(scale) -> None:
    """A 5xx on a later page: listed again from the start, not watched from an old revision."""
    pages = iter(
        [
            ([obj("a", "5")], "after-1", "10"),
            client.ApiException(status=503),
            ([obj("a", "5")], "after-1", "10"),
            ([obj("b", "6")], None, "10"),
        ]
    )

    class Flaky(Apiserver):
        def list_namespaced_custom_object(self, *args, **kwargs):
            if kwargs.get("watch"):
                return super().list_namespaced_custom_object(*args, **kwargs)
            self.asked.append(("list", kwargs["_continue"]))
            page = next(pages)
            if isinstance(page, Exception):
                raise page
            items, token, rv = page
            return {
                "items": items,
                "metadata": {"resourceVersion": rv, **({"continue": token} if token else {})},
            }

    server = Flaky({}, [])
    t = tally(scale, server)
    assert isinstance(t.error, Done) and set(t.seen) == {"a", "b"}
    assert server.asked == [
        ("list", None),
        ("list", "after-1"),
        ("list", None),
        ("list", "after-1"),
        ("watch", "10"),
    ]


@pytest.mark.parametrize(
    "expiry",
    [
        [{"type": "ADDED", "object": obj("c", "12")}, expired()],
        client.ApiException(status=410, reason="Expired"),
    ],
    ids=["in-the-stream", "as-the-answer"],
)
def test_an_expired_watch_lists_again_and_forgets_what_went_meanwhile(scale, expiry) -> None:
    """The apiserver says a watch expired with a 200 and an ERROR event of code 410 (what the
    kubernetes client's own watch fails to read with deserialize=False: a KeyError), or an expired
    continue token of the list with a 410."""
    lists = iter([([obj("a", "5"), obj("b", "6")], None, "10"), ([obj("b", "30", True)], None, "31")])

    class Relisting(Apiserver):
        def list_namespaced_custom_object(self, *args, **kwargs):
            if kwargs.get("watch"):
                return super().list_namespaced_custom_object(*args, **kwargs)
            self.asked.append(("list", kwargs["_continue"]))
            items, _, rv = next(lists)
            return {"items": items, "metadata": {"resourceVersion": rv}}

    server = Relisting({}, [expiry])
    t = tally(scale, server)
    assert t.seen == {"b": True}
    assert server.asked == [("list", None), ("watch", "10"), ("list", None), ("watch", "31")]


def test_changed_hears_every_change_after_seen_has_it_and_a_relist_reports_the_gone(scale) -> None:
    """The hook bench/operator_soak.py times its writes by: each listed object, each event's object,
    each deletion, and at a relist each object the new listing no longer holds, as gone; `seen` has
    each change before the hook hears it."""
    lists = iter([([obj("a", "5"), obj("b", "6")], None, "10"), ([obj("b", "30", True)], None, "31")])
    heard: list[tuple[str, object, bool, object]] = []
    made = threading.Event()  # the Tally's thread lists once the test holds the Tally

    class Relisting(Apiserver):
        def list_namespaced_custom_object(self, *args, **kwargs):
            if kwargs.get("watch"):
                return super().list_namespaced_custom_object(*args, **kwargs)
            made.wait(10)
            items, _, rv = next(lists)
            return {"items": items, "metadata": {"resourceVersion": rv}}

    server = Relisting(
        {},
        [
            [
                {"type": "ADDED", "object": obj("c", "11", True)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                {"type": "DELETED", "object": obj("c", "13", True)},
                expired(),
            ]
        ],
    )
    t = scale.Tally(
        server,
        RESOURCE,
        "operator",
        lambda o: o["ready"],
        lambda name, value, gone: heard.append((name, value, gone, t.seen.get(name, "absent"))),
    )
    made.set()
    t._thread.join(10)
    assert isinstance(t.error, Done)
    assert heard == [
        ("a", False, False, False),
        ("b", False, False, False),
        ("c", True, False, True),
        ("c", None, True, "absent"),
        ("a", None, True, "absent"),  # gone while the watch was away: said at the relist
        ("b", True, False, True),
    ]


def test_the_soaks_tracker_times_writes_to_ready_at_their_generation_and_deletions_to_gone(
    scale, monkeypatch
) -> None:
    """bench/operator_soak.py's Tracker over the Tally hook: a write is timed when Ready is seen at its
    generation or later (whether that came before or after the write was expected), a deletion when
    the object is gone, a write not yet Ready stays outstanding."""
    import operator_soak

    made: list[tuple] = []

    def tally(api, resource, namespace, test, changed):
        made.append((resource, namespace, test))
        return Hook(changed)

    monkeypatch.setattr(operator_soak, "Tally", tally)

    class Hook:
        def __init__(self, changed) -> None:
            self.changed, self.seen = changed, {}

        def see(self, name: str, generation, gone: bool = False) -> None:
            if gone:
                self.seen.pop(name, None)
            else:
                self.seen[name] = generation
            self.changed(name, generation, gone)

        def existing(self) -> int:
            return len(self.seen)

        def stop(self) -> None:
            pass

    tracker = operator_soak.Tracker(client.ApiClient())
    soaked = (operator_soak.GROUP, operator_soak.VERSION, operator_soak.PLURAL)
    assert made == [(soaked, operator_soak.NAMESPACE, operator_soak.ready_generation)]
    hook = tracker.tally
    hook.see("a", 1)  # Ready at 1 before the write of 1 was expected
    tracker.expect("a", 1, 0.0, "create")
    tracker.expect("b", 2, 0.0, "update")
    hook.see("b", 1)  # Ready at the old generation: not yet
    assert tracker.outstanding() == 1
    hook.see("b", 2)
    tracker.expect_gone("a", 0.0)
    assert tracker.outstanding() == 1
    hook.see("a", None, gone=True)
    assert tracker.outstanding() == 0
    assert len(tracker.latencies["create"]) == 1 and len(tracker.latencies["update"]) == 1
    assert len(tracker.deletions) == 1
    hook.existing = lambda: scale.Tally._raise(
        SimpleNamespace(error=RuntimeError("gone"), resource=soaked, namespace="soak")
    )
    with pytest.raises(SystemExit, match="watching modeldeployments in soak failed: gone"):
        tracker.outstanding()  # what ended the watch, said where the soak waits


@pytest.mark.parametrize(
    "error",
    [
        client.ApiException(status=403, reason="Forbidden"),
        [expired(403) | {"object": {"code": 403, "message": "Forbidden"}}],
    ],
)
def test_any_other_error_ends_the_bench_in_the_wait(scale, error) -> None:
    server = Apiserver({None: ([obj("a", "5")], None, "10")}, [error])
    t = tally(scale, server)
    assert server.asked[-1] == ("watch", "10")  # not watched again
    with pytest.raises(SystemExit, match=r"(?s)watching deployments in operator failed.*Forbidden"):
        scale.wait("Deployments", t.meeting, 2, timeout=60)


def test_wait_returns_when_the_count_reaches_its_target(scale) -> None:
    counts = iter([0, 1, 2])
    assert scale.wait("objects", lambda: next(counts), target=2, timeout=60) > 0


def test_an_object_is_ready_at_its_generation_only(scale) -> None:
    def md(generation: int, observed: int | None, ready: str = "True") -> dict:
        condition = {"type": "Ready", "status": ready, "observedGeneration": observed}
        return {"metadata": {"generation": generation}, "status": {"conditions": [condition]}}

    assert scale.is_ready(md(1, 1)) and scale.is_ready(md(3, 3))
    assert not scale.is_ready(md(2, 1))
    assert not scale.is_ready(md(1, 1, "False"))
    assert not scale.is_ready({"metadata": {"generation": 1}})
    assert not scale.is_ready({"metadata": {"generation": 1}, "status": None})


REFUSALS = [
    # without the baseline's fleet there is no order to swap
    (["--operator-first", "--no-direct"], "--operator-first needs the baseline"),
    (["--operator-first", "--no-direct", "--more", "0"], "--operator-first needs the baseline"),
    # a restart before the objects are Ready has no time to Ready: nothing that waits for one (the
    # baseline, --more) runs beside it, and without the restart it means nothing
    (["--restart-when-written"], "--restart-when-written needs --no-direct and no --more above 0"),
    (["--restart-when-written", "--no-direct", "--more", "5"], "--restart-when-written needs --no-direct"),
    (["--restart-when-written", "--no-direct", "--no-restart"], "--restart-when-written needs --no-direct"),
    # a bounded Ready phase: no further objects waiting for all Ready, no restart before Ready
    (["--ready-within", "60"], "--ready-within needs --more 0"),  # --more defaults to a quarter of n
    (["--ready-within", "60", "--more", "5"], "--ready-within needs --more 0"),
    (
        ["--ready-within", "60", "--no-direct", "--more", "0", "--restart-when-written"],
        "--ready-within needs",
    ),
    (["--ready-within", "60", "--more", "0", "--restart-when-written"], "--ready-within needs --more 0"),
]


@pytest.mark.parametrize(("argv", "message"), REFUSALS)
def test_options_that_cannot_run_together_are_refused_as_the_line_is_read(
    scale, monkeypatch, capsys, argv, message
) -> None:
    monkeypatch.setattr(sys, "argv", ["reconcile_scale.py", *argv])
    with pytest.raises(SystemExit) as exited:
        scale.main()
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_resumed_counts_a_kinds_reconciles_from_the_operators_metrics(scale) -> None:
    """Read over HTTP from a real prometheus_client server holding the operator's two metrics, by the
    names and labels of llmops.operators.metrics: -1 before anything serves them, 0 while any resource
    has objects waiting for a place, then the reconciles of the kind asked, every outcome but "retry"
    (kopf runs that one again), not another kind's; a /metrics without the reconciles is an error."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

    from llmops.operators import metrics

    port = scale.free_port()
    assert scale.resumed(port) == -1
    registry = CollectorRegistry()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with pytest.raises(SystemExit, match=scale.RECONCILES):
            scale.resumed(port)
        reconciles = Counter(
            scale.RECONCILES, "", metrics.RECONCILES._labelnames, registry=registry
        )  # fmt: skip
        waiting = Gauge(scale.WAITING, "", metrics.WAITING._labelnames, registry=registry)
        assert scale.resumed(port) == 0  # registered, nothing counted yet: a start, not an error
        reconciles.labels(kind="ModelDeployment", outcome="ready").inc(3)
        reconciles.labels(kind="ModelDeployment", outcome="reconciling").inc(2)
        reconciles.labels(kind="ModelDeployment", outcome="retry").inc(4)
        reconciles.labels(kind="TrainingJob", outcome="ready").inc(7)
        waiting.labels(resource="networkpolicies").set(4)
        waiting.labels(resource="modeldeployments").set(0)
        assert scale.resumed(port) == 0
        waiting.labels(resource="networkpolicies").set(0)
        assert scale.resumed(port) == 5
        assert scale.resumed(port, kind="TrainingJob") == 7
    finally:
        server.shutdown()
        thread.join()


class Started(Exception):
    """Raised by the stand-in control plane: how far the bench got."""


@pytest.mark.parametrize(
    ("argv", "first"),
    [
        ([], "cluster-direct"),
        (["--operator-first"], "cluster-operator"),
        (["--operator-first", "--more", "5"], "cluster-operator"),
        (["--restart-when-written", "--no-direct"], "cluster-operator"),
        (["--restart-when-written", "--no-direct", "--more", "0"], "cluster-operator"),
        (["--ready-within", "60", "--more", "0"], "cluster-direct"),  # accepted, as read
        (["--ready-within", "60", "--more", "0", "--operator-first"], "cluster-operator"),
    ],
)
def test_each_fleet_starts_its_own_control_plane_in_order(scale, monkeypatch, argv, first) -> None:
    """Each fleet gets a fresh control plane, so the second does not run beside the first one's objects;
    with --operator-first (--more allowed: it no longer shares the baseline's cluster) the operator's
    comes first. The stand-in control plane starts, then fails at its first kubectl: the bench ends
    there, and that plane is stopped and removed all the same."""
    made: list[str] = []
    stopped: list[tuple[str, bool]] = []

    class Cluster:
        def __init__(self, path, **_) -> None:
            self.name = Path(path).name
            made.append(self.name)

        def start(self) -> None:
            pass

        def kubectl(self, *_args) -> None:
            raise Started

        def processes(self) -> dict:
            return {}

        def stop(self, remove: bool = False) -> None:
            stopped.append((self.name, remove))

    monkeypatch.setattr(scale, "LocalCluster", Cluster)
    monkeypatch.setattr(sys, "argv", ["reconcile_scale.py", "--objects", "3", *argv])
    with pytest.raises(Started):
        scale.main()
    assert made == [first]
    assert stopped == [(first, True)]


def test_cpu_used_reads_a_gone_process_as_gone(scale) -> None:
    """A process gone by either reading (NaN), or in one of them only, is said to be gone, after the
    others, which stay ordered by the CPU seconds they used."""
    before = {"etcd": 1.0, "kube-apiserver": 2.0, "kwok": 0.0, "bench": 1.0, "machine": 0.0}
    after = {"etcd": 11.0, "kube-apiserver": float("nan"), "kwok": 45.0, "operator": 3.0, "machine": 100.0}
    line = scale.cpu_used(before, after, 50.0)
    gone = "bench (gone), kube-apiserver (gone), operator (gone)"
    assert line == f"kwok 45, etcd 10, {gone}; machine 100 (2.00 cores busy)"


def test_the_apiservers_requests_are_read_from_its_metrics_per_object_and_compared_by_fleet(scale) -> None:
    """apiserver_request_total summed by verb and resource (codes, scopes and other labels together;
    the subresource after a slash), per object between two readings; the table puts the operator's
    fleet's excess over the baseline first, and leaves out what no fleet sent 0.05 times per object."""
    status = 'resource="modeldeployments",subresource="status",verb="PATCH"'
    metrics = (
        "# TYPE apiserver_request_total counter\n"
        f'apiserver_request_total{{code="200",{status}}} 30\n'
        f'apiserver_request_total{{code="409",{status}}} 2\n'
        'apiserver_request_total{code="201",resource="events",subresource="",verb="POST"} 50\n'
        'apiserver_request_total{code="200",verb="GET"} 3\n'
        "# TYPE apiserver_request_duration_seconds histogram\n"
        'apiserver_request_duration_seconds_count{resource="events",verb="POST"} 50\n'
    )
    answer = SimpleNamespace(data=metrics.encode())
    api = SimpleNamespace(api_client=SimpleNamespace(call_api=lambda *_a, **_k: answer))
    read = scale.api_requests(api)
    assert read == {"PATCH modeldeployments/status": 32.0, "POST events": 50.0, "GET (non-resource)": 3.0}
    operator = scale.requests_used({"POST events": 10.0}, read, 10)
    assert operator == {"PATCH modeldeployments/status": 3.2, "POST events": 4.0, "GET (non-resource)": 0.3}
    direct = {"POST events": 3.5, "GET (non-resource)": 0.3, "GET leases": 0.01}
    header, total, *rows = scale.requests_table({"direct": direct, "operator": operator})
    assert header.split() == ["direct", "operator"] and total.split() == ["in", "all", "3.81", "7.50"]
    assert [r.split() for r in rows] == [
        ["PATCH", "modeldeployments/status", "0.00", "3.20"],
        ["POST", "events", "3.50", "4.00"],
        ["GET", "(non-resource)", "0.30", "0.30"],
    ]


def test_firsts_times_each_object_once_when_every_part_of_it_has_met_the_test(scale) -> None:
    """The direct writes' object counts once both its Deployments have been available, through a Tally's
    hook: a relist's repeats, a part that goes back or is deleted, and a name of no object count no
    further; `times` rise with the objects in the order they became Ready."""
    firsts = scale.Firsts({"a-vllm": "a", "a-gateway": "a", "b-vllm": "b", "b-gateway": "b"})
    pages = {None: ([obj("a-vllm", "1", True), obj("b-vllm", "2"), obj("other", "3", True)], None, "10")}
    outcomes = [
        [
            {"type": "MODIFIED", "object": obj("b-vllm", "11", True)},
            {"type": "MODIFIED", "object": obj("a-vllm", "12")},  # went back: a's part stays met
            {"type": "MODIFIED", "object": obj("b-gateway", "13", True)},  # b: both parts met
            {"type": "DELETED", "object": obj("b-vllm", "14", True)},
        ],
        [expired()],  # listed again: b-vllm gone, a-vllm's repeat counts no further
        [{"type": "ADDED", "object": obj("a-gateway", "21", True)}],  # a: both parts met
    ]
    pages_after = {
        None: ([obj("a-vllm", "12"), obj("b-gateway", "13", True)], None, "20")
    }  # a-vllm still back
    server = Apiserver(pages, outcomes)
    original = server.list_namespaced_custom_object
    listed = []

    def listing(*args, **kwargs):
        if not kwargs.get("watch"):
            listed.append(1)
            server.pages = pages if len(listed) == 1 else pages_after
        return original(*args, **kwargs)

    server.list_namespaced_custom_object = listing
    counts: list[tuple[str, int]] = []  # the count after each change the hook heard

    def changed(name, value, gone) -> None:
        firsts.changed(name, value, gone)
        counts.append((name, firsts.count()))

    t = scale.Tally(server, RESOURCE, "direct", lambda o: o["ready"], changed)
    t._thread.join(10)
    assert len(listed) == 2
    assert firsts.count() == 2
    # b at its gateway's event; a only at the event of its second part, not at the relist
    assert counts.index(("b-gateway", 1)) < counts.index(("a-gateway", 2)) == len(counts) - 1
    assert firsts.met == {"a-vllm", "a-gateway", "b-vllm", "b-gateway"}
    assert firsts.left == {"a": 0, "b": 0}


def test_firsts_of_the_operators_objects_counts_each_ready_object_once(scale) -> None:
    firsts = scale.Firsts({"x": "x", "y": "y"})
    firsts.changed("x", False, False)
    assert firsts.count() == 0
    firsts.changed("x", True, False)
    firsts.changed("x", True, False)  # a later status write: still one
    firsts.changed("y", True, True)  # a deletion is no Ready
    firsts.changed("z", True, False)  # not an object of the fleet
    assert firsts.count() == 1


@pytest.mark.parametrize(
    ("direct", "operator", "n", "expected"),
    [
        # every object Ready in both: each tenth, the last one the whole fleet's ratio
        (
            [float(i) for i in range(1, 11)],
            [2.0 * i for i in range(1, 11)],
            10,
            [(k, float(k), 2.0 * k) for k in range(1, 11)],
        ),
        # the operator's fleet stopped at 4 of 20: the tenths it reached, then the most both reached
        ([1.0] * 20, [3.0, 4.0, 5.0, 6.0], 20, [(2, 1.0, 4.0), (4, 1.0, 6.0)]),
        ([1.0] * 20, [3.0, 4.0, 5.0], 20, [(2, 1.0, 4.0), (3, 1.0, 5.0)]),
        ([], [1.0], 10, []),  # nothing both reached: nothing to compare
        ([1.0, 2.0], [1.0, 2.0, 3.0], 100, [(2, 2.0, 2.0)]),  # n / steps below what both reached
        # n not a multiple of the steps: every n // steps objects
        (
            [float(i) for i in range(1, 26)],
            [float(i) for i in range(1, 8)],
            25,
            [(2, 2.0, 2.0), (4, 4.0, 4.0), (6, 6.0, 6.0), (7, 7.0, 7.0)],
        ),
    ],
)
def test_ratios_at_each_tenth_both_fleets_reached_and_the_most_both_reached(
    scale, direct, operator, n, expected
) -> None:
    assert scale.ratios_at(direct, operator, n) == expected


def test_ratios_at_each_twentieth_as_the_bench_prints_them(scale) -> None:
    times = [float(i) for i in range(1, 10_001)]
    rows = scale.ratios_at(times, times[:1234], 10_000, steps=20)
    assert [k for k, _, _ in rows] == [500, 1000, 1234]


def test_the_first_fleet_waits_for_all_until_its_bound_the_second_for_the_firsts_count(scale) -> None:
    now = scale.time.perf_counter()
    target, timeout = scale.ready_phase({}, 100, start=now - 10, within=60)
    assert target == 100 and 49 < timeout <= 50
    assert scale.ready_phase({"operator": [1.0, 2.0, 3.0]}, 100, start=now, within=60)[0] == 3
    assert scale.ready_phase({"direct": []}, 100, start=now, within=60)[0] == 1  # none Ready: the first
    assert scale.ready_phase({}, 100, start=now - 90, within=60)[1] == 0  # its bound already past


def test_a_partial_wait_returns_at_its_bound_with_the_count_short(scale, capsys) -> None:
    before = scale.time.perf_counter()
    ended = scale.wait("objects", lambda: 3, target=10, timeout=0.0, partial=True)
    assert before <= ended <= scale.time.perf_counter()
    assert "objects: 3/10 when its 0 s had run out" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="timed out waiting for objects: 3/10"):
        scale.wait("objects", lambda: 3, target=10, timeout=0.0)
