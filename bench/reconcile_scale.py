"""ModelDeployments at scale, on a real local control plane (kwok makes the pods Ready).

N ModelDeployments go through the operator: created while it runs (from as many threads as it has
workers), it resolves the version in a (local) registry, applies every child (vLLM Deployment and
Service, ScaledObject, PodMonitor, gateway ConfigMap, Deployment and Service, two
PodDisruptionBudgets, three NetworkPolicies), watches the children and writes status until all N are
Ready. The baseline, in the same run, first writes the same objects and children directly (as many
threads, each creating an object, then server-side applying its children) and waits until all their
Deployments are available (`--operator-first`: after the operator's fleet). Each fleet runs on a
control plane of its own, started fresh for it and stopped after it: on a shared one the second
fleet ran beside the first one's objects and cost the machine more (2026-12-05: 53-73 CPU seconds
more at 1,000 in one pair of runs), which moved the ratio by 0.35 there. Each fleet's clock starts at
its first create; the bench counts progress from watches (`Tally`), so its own reads cost the
apiserver the same in both fleets, and prints the CPU seconds each process used on the way to Ready
(on 2 cores both fleets keep the machine busy, so they show where the time goes), and the requests
the apiserver served per object over the same time, by verb and resource, side by side (its own
apiserver_request_total, every client's: what the operator asks beyond the direct writes, and what
that makes the controllers ask). Both wait on the
same controllers (deployment, replicaset, scheduler, kwok), so the ratio (the direct writes' time
over the operator's: below 1.0 the operator took longer) is the operator's own overhead on the way
to Ready, as long as those controllers are not what sets the pace (at kube-controller-manager's
default 20 requests a second they are, for both fleets: see `--controller-manager-arg`); the time to
create all children is printed too (every child Deployment seen, in both fleets). Prints both, the
ratio, and the operator's RSS: when all were Ready, settled, its peak, and where it goes: the RSS of
the same operator started with nothing to watch (imports, clients, threads), and the rest per
object. Then `--more` further objects (a quarter of N by default) are created while the same
operator runs; what its settled RSS grows by for them is the cost of one more object (the first N
also carry what a working operator holds whatever the count: imports done at the first reconcile,
its worker threads, kopf's per-resource watchers), and what 10,000 objects added one by one would
come to is extrapolated from it. A burst of objects (all created at once, the default; or all there
before the operator starts, `--cold-start`, a first start) costs more per object (the allocators
keep the free space of the burst), so the burst's (or the first start's) and the restart's RSS at
10,000 are extrapolated from their own cost per object above idle, the figures that size the
operator (docs/operations.md, "Sizing the operator"). Last (unless `--no-restart`), the operator is
restarted with every object and child in place, as after an upgrade: it lists them all (in pages,
operators.main.LIST_PAGE_SIZE) and resumes each; its peak RSS, and its RSS once it is done with its
start (as many reconciles as objects on its own /metrics, retries not counted, none waiting for a
place, then its CPU quiet for 5 s, at least IDLE_SECONDS after the restart), are printed, with the
objects Ready at the restart. `--restart-when-written` restarts it as soon as every child Deployment
is seen, before the objects are Ready (at 10,000 their Ready phase would take hours here, at the
controller-manager's pace; the restart then fits a session): its RSS before the restart is then read
at that point, no first start or burst is extrapolated from it, and no `--more` objects are made.
`--ready-within S` bounds both fleets' Ready phases instead, for a ratio at counts whose whole Ready
phase takes hours here (10,000): each ends S seconds after its fleet's first create, the second's
also once it has as many objects Ready as the first had; the time at which each object first became
Ready (the direct writes': both its Deployments available, as the bench's watch saw them) is kept,
and the ratio printed at each 5% of the objects that both fleets reached and at the most both reached.
`--tracemalloc` runs the operator under tracemalloc and prints its Python heap by package and its
top allocation lines when settled (and again once restarted), and the live objects by type, and per
object what its heap holds beyond the same operator's idle heap (`--tracemalloc-frames N`: by
allocation traceback, not line, and the top tracebacks). At each reading the RSS is split by
mapping (files, thread stacks, anonymous); `--allocators` adds pymalloc's and glibc's own accounts
of the anonymous part: what live blocks hold, and what free space each keeps. At the end, each control-plane
process's peak RSS, each fleet's control plane: what sets the count this machine can hold
(`--apiserver-arg=--watch-cache=false`, with the `=` since the value starts with a dash, turns off
the apiserver's cache of every object). `--controller-manager-arg=--kube-api-qps=100` lifts the
controller-manager's client from its default 20 requests per second, which otherwise sets the pace
of every rollout (and so of both fleets' time to Ready: the direct writes' 2,000 Deployments became
available in about 480 s here at 20, and in 179 s at 100 with `--kube-api-burst=200`). `--no-direct`
leaves the baseline's fleet out, for the operator's RSS alone at larger counts (raise `--timeout`
there). `--operator-env` runs the operator with further environment variables (another allocator,
say). `--create-rate R` creates the operator's objects at R a second, in place of all at once: what
a burst costs beside the objects themselves. `--cold-start` creates every object before the operator
starts, whose clock then starts with it (its first start on a cluster that has them: the runs before
2026-12-05 measured this way, with polls that listed the operator's Deployments every second while
it wrote them).

    python bench/reconcile_scale.py [--objects 1000] [--more K] [--no-direct] [--no-restart]
        [--create-rate R | --cold-start] [--operator-first] [--restart-when-written] [--ready-within S]
        [--malloc-arena-max N] [--apiserver-arg=FLAG]... [--controller-manager-arg=FLAG]...
        [--operator-env NAME=VALUE]...
        [--allocators | --tracemalloc [--tracemalloc-frames N]]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines
from procfs import cpu_seconds, machine_cpu_seconds, rss_mib  # bench/procfs.py, beside this script
from prometheus_client.parser import text_string_to_metric_families

from llmops.api import GROUP, MODEL_DEPLOYMENT, VERSION
from llmops.api.modeldeployment import ModelDeploymentSpec
from llmops.dev.cluster import DEFAULT_NODES, FakeNode, LocalCluster, free_port
from llmops.operators import metrics
from llmops.operators.apply import Applier
from llmops.operators.kube import Kube
from llmops.operators.modeldeployment.builders import build
from llmops.operators.modeldeployment.names import vllm_name
from llmops.operators.modeldeployment.observe import rolled_out
from llmops.operators.modeldeployment.plan import Plan, ServedVersion, ServingSettings
from llmops.registry import GateVerdict, Lineage, register
from llmops.storage import LocalStore

ROOT = Path(__file__).resolve().parents[1]
PLURAL = MODEL_DEPLOYMENT.plural
WORKERS = 16  # the operator's settings.execution.max_workers
LIST_PAGE = 500  # objects per page of the bench's own lists, as client-go's pager asks
PAGE_TIMEOUT = 120  # seconds one page of a list may take (and a watch, beyond WATCH_SECONDS)
DEPLOYMENTS = ("apps", "v1", "deployments")
WATCH_SECONDS = 300  # one watch request, then another from its last resourceVersion
WAIT_STEP = 0.25  # seconds between two looks at a count (a Tally's; the restarted operator's /metrics)
PODS_PER_OBJECT = 2  # one vLLM replica, one gateway replica
# The operator under tracemalloc: on SIGUSR1 it writes its heap by package and its top lines.
TRACED = """
import re, signal, sys, threading, tracemalloc
def dump():
    snap = tracemalloc.take_snapshot()
    snap.dump({out!r} + ".snapshot")
    packages, total = {{}}, 0
    for stat in snap.statistics("filename"):
        name = stat.traceback[0].filename
        m = re.search(r"site-packages/([^/]+)", name) or re.search(r"/(llmops)/", name)
        key = m.group(1) if m else ("imports" if name.startswith("<frozen") else "stdlib")
        packages[key] = packages.get(key, 0) + stat.size
        total += stat.size
    lines = [f"  traced {{total / 2**20:.1f}} MiB"]
    for key, size in sorted(packages.items(), key=lambda kv: -kv[1])[:12]:
        lines.append(f"  {{size / 2**20:7.1f}} MiB  {{key}}")
    lines.append("  top lines:")
    for stat in snap.statistics("lineno")[:15]:
        f = stat.traceback[0]
        where = f"{{f.filename[-60:]}}:{{f.lineno}}"
        lines.append(f"  {{stat.size / 2**20:7.1f}} MiB {{stat.count:8d}} blocks  {{where}}")
    if tracemalloc.get_traceback_limit() > 1:
        lines.append("  top tracebacks (innermost first):")
        for stat in snap.statistics("traceback")[:12]:
            lines.append(f"  {{stat.size / 2**20:7.1f}} MiB {{stat.count:8d}} blocks")
            for f in stat.traceback:
                lines.append(f"      {{f.filename[-60:]}}:{{f.lineno}}")
    import collections, gc
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    lines.append("  live objects the garbage collector tracks, by type: " + ", ".join(
        f"{{name}} {{n}}" for name, n in counts.most_common(25)))
    open({out!r} + ".tmp", "w").write(chr(10).join(lines))
    import os
    os.replace({out!r} + ".tmp", {out!r})
signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=dump).start())
sys.argv = {argv!r}
from llmops.cli import main
main()
"""
# The operator with its allocators' own accounts: on SIGUSR2 it writes pymalloc's (the arenas Python
# keeps its small objects in, sys._debugmallocstats) and glibc's (mallinfo2: its arenas and mmapped
# blocks, in use and free) as `key value` lines, bytes.
ALLOCATORS = r"""
import ctypes, os, re, signal, sys, tempfile, threading
class Mallinfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]
def dump():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    m = libc.mallinfo2()
    with tempfile.TemporaryFile("w+") as f:  # _debugmallocstats writes to the C stderr
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()
    def number(pattern):
        found = re.search(pattern + r"\s*=\s*([\d,]+)", text)
        return int(found.group(1).replace(",", "")) if found else 0
    arenas = number(r"# arenas allocated current")
    size = re.search(r"arenas \* (\d+) bytes/arena", text)
    values = {{
        "pymalloc_arenas": arenas * int(size.group(1)) if size else 0,
        "pymalloc_used": number(r"# bytes in allocated blocks"),
        "glibc_arena": m.arena, "glibc_mmapped": m.hblkhd, "glibc_used": m.uordblks, "glibc_free": m.fordblks,
    }}
    open({out!r} + ".tmp", "w").write("".join(f"{{k}} {{v}}\n" for k, v in values.items()))
    os.replace({out!r} + ".tmp", {out!r})
signal.signal(signal.SIGUSR2, lambda *_: threading.Thread(target=dump).start())
sys.argv = {argv!r}
from llmops.cli import main
main()
"""
NAN = float("nan")  # a reading of a process that is gone
IDLE_SECONDS = 15  # the operator started, watching an empty namespace, before its RSS is read
SETTLE_SECONDS = 10  # after the last object is Ready: child events and status writes done


def spec(registry: Path) -> dict:
    return {
        "model": {"name": "bench", "version": "1"},
        "registry": {"local": {"path": str(registry)}},
        "resources": {"cpu": "100m", "memory": "128Mi"},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 4},
        "gateway": {"replicas": 1},
    }


def objects(n: int, registry: Path, first: int = 0) -> list[dict]:
    """`n` ModelDeployments named bench-<first>, bench-<first + 1>, ..."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "spec": spec(registry)}
    out = []
    for i in range(first, first + n):
        obj = copy.deepcopy(body)
        obj["metadata"] = {"name": f"bench-{i:05d}"}
        out.append(obj)
    return out


def create_all(
    api: client.CustomObjectsApi, namespace: str, bodies: list[dict], rate: float | None = None
) -> list[dict]:
    """Create `bodies` from WORKERS threads, as fast as the apiserver takes them, or `rate` a second."""
    begun = time.perf_counter()

    def create(item: tuple[int, dict]) -> dict:
        i, body = item
        if rate:
            time.sleep(max(0.0, begun + i / rate - time.perf_counter()))
        return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(create, enumerate(bodies)))


def creating(paced: Future | None) -> int:
    """0 while the paced creates go on or have all been answered; a failed create raises here, in
    the wait, not at its timeout."""
    if paced is not None and paced.done() and paced.exception() is not None:
        raise SystemExit(f"creating the operator's objects failed: {paced.exception()}")
    return 0


def children_of(owner: dict) -> list[dict]:
    """The children the operator would apply for `owner` (created: its uid is in their owner
    references), built by the same pure builders."""
    md_spec = ModelDeploymentSpec.model_validate(owner["spec"])
    name = owner["metadata"]["name"]
    deployment = vllm_name(name, "bench", "1", "bench")
    plan = Plan((ServedVersion("bench", "1", "stable", 100, deployment),))
    return build(md_spec, owner, plan, ServingSettings())


def is_ready(md: dict) -> bool:
    """A ModelDeployment's Ready condition is True at its generation."""
    return any(
        c["type"] == "Ready"
        and c["status"] == "True"
        and c.get("observedGeneration") == md["metadata"]["generation"]
        for c in (md.get("status") or {}).get("conditions", [])
    )


class Tally:
    """The objects of one resource in one namespace, and how many of them meet `test`, kept by a
    watch in a thread of the bench: listed in pages of LIST_PAGE, then watched from the list's
    resourceVersion (again from the last event's at the end of each WATCH_SECONDS), listed anew when
    that has expired (410). Both fleets' waits read one: a poll that lists every object loads the
    apiserver it measures (each second, about 10 MB of JSON at 2,000 Deployments; at 10,000 objects
    one list of them ran past the apiserver's 60 s), and before 2026-12-05 the bench polled so only
    while the operator wrote its children, a load that fell on the operator's fleet alone.

    `existing()` and `meeting()` read what the watch has seen; an error other than a loaded or
    unreachable apiserver (429, a 5xx, no answer: watched again after a second) is raised
    there, in the wait, and ends the bench. `seen` maps each object's name to `test(object)`
    (`meeting()` counts the truthy ones). `changed(name, value, gone)`, when given, is called from
    the watch's thread after `seen` has taken each change in (a listing: every object listed, and
    each object it no longer holds as gone; an event: its object), so a caller that reads `seen`
    under its own lock misses none (bench/operator_soak.py times its writes so). A watch broken after
    some events goes on from the last one's resourceVersion."""

    def __init__(
        self,
        api: client.CustomObjectsApi,
        resource: tuple[str, str, str],
        namespace: str,
        test: Callable[[dict], Any],
        changed: Callable[[str, Any, bool], None] | None = None,
    ) -> None:
        self.api, self.resource, self.namespace, self.test = api, resource, namespace, test
        self.changed = changed
        self.seen: dict[str, Any] = {}
        self._since: str | None = None  # the last resourceVersion seen; None: list (again) first
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tally-{resource[2]}", daemon=True)
        self._thread.start()

    def existing(self) -> int:
        self._raise()
        return len(self.seen)

    def meeting(self) -> int:
        self._raise()
        return sum(list(self.seen.values()))

    def stop(self) -> None:
        self._stop.set()

    def _raise(self) -> None:
        if self.error is not None:
            raise SystemExit(f"watching {self.resource[2]} in {self.namespace} failed: {self.error}")

    def _list(self) -> str:
        seen, token = {}, None
        while True:
            page = self.api.list_namespaced_custom_object(
                *self.resource[:2], self.namespace, self.resource[2],
                limit=LIST_PAGE, _continue=token, _request_timeout=PAGE_TIMEOUT,
            )  # fmt: skip
            seen.update((o["metadata"]["name"], self.test(o)) for o in page["items"])
            if not (token := page["metadata"].get("continue")):
                before, self.seen = self.seen, seen
                if self.changed is not None:
                    for name in before.keys() - seen.keys():
                        self.changed(name, None, True)
                    for name, value in seen.items():
                        self.changed(name, value, False)
                return page["metadata"]["resourceVersion"]

    def _see(self, event: dict) -> str:
        """Takes one watch event in; returns the resourceVersion to watch on from."""
        obj = event["object"]
        name = obj["metadata"].get("name", "")  # a BOOKMARK's object has none
        if event["type"] == "DELETED":
            self.seen.pop(name, None)
            if self.changed is not None:
                self.changed(name, None, True)
        elif event["type"] in ("ADDED", "MODIFIED"):
            self.seen[name] = value = self.test(obj)
            if self.changed is not None:
                self.changed(name, value, False)
        return obj["metadata"]["resourceVersion"]

    def _watch(self) -> None:
        """One watch request from `_since`, until the apiserver ends it (WATCH_SECONDS) or the Tally is
        stopped, `_since` following each event, so that the next one (or one after a broken
        connection) goes on from there. An ERROR event (the apiserver says a watch has expired with a
        200 and then an ERROR of code 410) is raised as an ApiException of its code. Read line by line
        as the kubernetes client's own watch does, with no models built."""
        response = self.api.list_namespaced_custom_object(
            *self.resource[:2], self.namespace, self.resource[2],
            watch=True, resource_version=self._since, allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS, _preload_content=False,
            _request_timeout=WATCH_SECONDS + PAGE_TIMEOUT,
        )  # fmt: skip
        try:
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise client.ApiException(status=status.get("code") or 0, reason=status.get("message"))
                self._since = self._see(event)
                if self._stop.is_set():
                    break
        finally:
            response.close()
            response.release_conn()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._since is None:  # a listing broken midway leaves it None: listed again
                    self._since = self._list()
                begun = time.monotonic()
                self._watch()
                if time.monotonic() - begun < 1.0:  # ended at once: not again at once
                    time.sleep(1.0)
            except (client.ApiException, urllib3.exceptions.HTTPError) as e:
                status = getattr(e, "status", None) or 0
                if self._stop.is_set():  # stopped, and the cluster likely with it
                    return
                if status == 410:  # the list's or the watch's revision was compacted: list again
                    self._since = None
                elif isinstance(e, client.ApiException) and 0 < status < 500 and status != 429:
                    self.error = e
                    return
                else:  # a watch goes on from its last event, a listing starts again
                    what = f"watching {self.resource[2]} failed ({status or type(e).__name__})"
                    print(f"  {what}; watching again", file=sys.stderr, flush=True)
                    time.sleep(1.0)
            except Exception as e:  # said in the wait, which ends the bench
                self.error = e
                return


class Firsts:
    """When each object first became Ready, in order, from a Tally's `changed` hook (its watch's
    thread): `times[k - 1]` is the time.perf_counter() at which the k-th did. `owner_of` maps each
    watched object's name to the object it counts for: the direct writes' object is Ready once both
    its Deployments have been available, the operator's once its Ready condition has been True at its
    generation (a name mapped to itself). Each part counts once (a relist's repeats, an object that
    goes back, do not), as a rollout that was once complete was; a name not in `owner_of` not at all."""

    def __init__(self, owner_of: dict[str, str]) -> None:
        self.owner_of = owner_of
        self.left: dict[str, int] = {}
        for owner in owner_of.values():
            self.left[owner] = self.left.get(owner, 0) + 1
        self.met: set[str] = set()
        self.times: list[float] = []

    def changed(self, name: str, value: Any, gone: bool) -> None:
        owner = self.owner_of.get(name)
        if gone or not value or owner is None or name in self.met:
            return
        self.met.add(name)
        self.left[owner] -= 1
        if not self.left[owner]:
            self.times.append(time.perf_counter())

    def count(self) -> int:
        return len(self.times)


def ready_phase(reached: dict[str, list[float]], n: int, start: float, within: float) -> tuple[int, float]:
    """--ready-within: a fleet's Ready phase, as the target and the timeout (seconds) of its wait.
    Each fleet waits until `within` seconds after its first create (`start`, time.perf_counter()):
    the first (nothing in `reached` yet) for all `n` objects, the second for as many as the first
    had Ready (at least 1)."""
    target = max(1, len(next(iter(reached.values())))) if reached else n
    return target, max(0.0, start + within - time.perf_counter())


def ratios_at(
    direct: list[float], operator: list[float], n: int, steps: int = 10
) -> list[tuple[int, float, float]]:
    """Each fleet's seconds from its first create to its k-th object Ready (`direct`, `operator`:
    each fleet's times so far, in order, from Firsts, less its start), at each `n / steps` objects
    that both fleets reached and at the most both reached: [(k, direct's, operator's)], k rising.
    Their ratio, direct's over operator's, is the to-Ready ratio of the whole fleet where k = n."""
    both = min(len(direct), len(operator))
    ks = sorted(
        {k for k in range(n // steps, both + 1, max(1, n // steps)) if k} | ({both} if both else set())
    )
    return [(k, direct[k - 1], operator[k - 1]) for k in ks]


def per_object(idle: Path, traced: Path, n: int, frames: int, when: str = "settled") -> str:
    """What the operator's Python heap holds per object: its heap at `when` (settled after its first
    start, or restarted and done) minus its heap idle, by the line (or, with more than one frame, the
    traceback) that allocated it, in bytes per object."""
    import tracemalloc

    before = tracemalloc.Snapshot.load(str(idle) + ".snapshot")
    after = tracemalloc.Snapshot.load(str(traced) + ".snapshot")
    diffs = after.compare_to(before, "traceback" if frames > 1 else "lineno")
    grown = sum(d.size_diff for d in diffs)
    lines = [f"  per object, {when} minus idle: {grown / n:.0f} B in all (Python heap); the largest:"]
    for d in diffs[:20]:
        lines.append(f"  {d.size_diff / n:8.0f} B {d.count_diff / n:6.1f} blocks")
        for f in d.traceback:
            lines.append(f"      {f.filename[-60:]}:{f.lineno}")
    return "\n".join(lines)


def mappings_mib(pid: int) -> dict[str, float]:
    """Where a process's resident memory is, by kind of mapping (/proc/PID/smaps), MiB: `files` (the
    interpreter, shared libraries, mapped files), `stacks` (the main stack, and each thread's: an
    anonymous read-write mapping right above its guard page, a `---p` mapping, as glibc lays them
    out), `anonymous` (the rest: glibc's heap and arenas, pymalloc's arenas, large blocks)."""
    out = {"files": 0.0, "stacks": 0.0, "anonymous": 0.0}
    kind, below = "anonymous", (0, "")  # the mapping just read: (its end, its permissions)
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            start, end = (int(x, 16) for x in head[0].split("-"))
            perms, path = head[1], (head[5] if len(head) > 5 else "")
            if path.startswith("/"):
                kind = "files"
            elif path == "[stack]" or (not path and perms.startswith("rw") and below == (start, "---p")):
                kind = "stacks"
            else:
                kind = "anonymous"
            below = (end, perms)
        elif head and head[0] == "Rss:":
            out[kind] += int(head[1]) / 1024
    return out


def allocators(path: Path, proc: subprocess.Popen) -> dict[str, float]:
    """The operator's allocator accounts (ALLOCATORS), MiB, asked for by SIGUSR2."""
    path.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR2)
    wait("the allocator accounts", lambda: int(path.exists()), 1, 60, proc)
    return {k: int(v) / 2**20 for k, v in (line.split() for line in path.read_text().splitlines())}


def where(m: dict[str, float], accounts: dict[str, float] | bool) -> str:
    """One line: the RSS by mapping (`mappings_mib`), and the allocators' own accounts of the
    anonymous part (what they hold, not all of it resident)."""
    text = f"files {m['files']:.0f}, thread stacks {m['stacks']:.0f}, anonymous {m['anonymous']:.0f}"
    if accounts:
        a = accounts
        text += (
            f" (pymalloc arenas {a['pymalloc_arenas']:.0f}, {a['pymalloc_used']:.0f} of it in live blocks;"
            f" glibc arenas {a['glibc_arena']:.0f}, {a['glibc_used']:.0f} in use, {a['glibc_free']:.0f} free;"
            f" glibc mmapped blocks {a['glibc_mmapped']:.0f})"
        )
    return text


def wait_quiet(
    proc: subprocess.Popen, timeout: float, since: float, window: float = 5.0, busy: float = 0.2
) -> float:
    """When a restarted operator is done with its start (every object listed and resumed): the
    start of the first `window` seconds, at least IDLE_SECONDS after it was started (`since`,
    time.perf_counter()), in which it used under `busy` of a core (the periodic resync, 300 s apart
    per object, begins only after that)."""
    start = time.perf_counter()
    used = cpu_seconds(proc.pid)
    while time.perf_counter() - start < timeout:
        time.sleep(window)
        if proc.poll() is not None:
            raise SystemExit(f"the restarted operator exited ({proc.returncode})")
        now = cpu_seconds(proc.pid)
        if now - used < busy * window and time.perf_counter() - since > IDLE_SECONDS:
            return time.perf_counter() - window
        used = now
    raise SystemExit("timed out waiting for the restarted operator to go quiet")


RECONCILES = metrics.RECONCILES.describe()[0].name  # the operator's own metrics (operators.metrics)
WAITING = metrics.WAITING.describe()[0].name
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no $http_proxy


def resumed(port: int, kind: str = MODEL_DEPLOYMENT.kind) -> int:
    """How far a restarted operator is with its start, from its own /metrics on `port` (read with
    prometheus_client's parser): the reconciles of `kind` it has finished (`RECONCILES`, every outcome
    but "retry", which kopf runs again), 0 while any watched resource has objects waiting for a place
    (`WAITING`), -1 before it serves /metrics. Reconciles, not objects: once none waits, up to the
    operator's worker limit may still be in their first one (`wait_quiet` covers those). Raises
    SystemExit when /metrics answers without `RECONCILES` (renamed: the wait would never end)."""
    try:
        with DIRECT.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except (OSError, http.client.HTTPException):  # not serving yet, or cut off: asked again
        return -1
    reconciles = waiting = 0.0
    families = {family.name: family for family in text_string_to_metric_families(text)}
    if RECONCILES not in families:
        raise SystemExit(f"the operator's /metrics has no {RECONCILES}")
    for sample in families[RECONCILES].samples:
        if sample.name.endswith("_total") and sample.labels.get("kind") == kind:
            reconciles += sample.value if sample.labels.get("outcome") != "retry" else 0
    for sample in families[WAITING].samples if WAITING in families else ():
        waiting += sample.value
    return 0 if waiting else int(reconciles)


def wait(
    what: str,
    check,
    target: int,
    timeout: float,
    proc: subprocess.Popen | None = None,
    partial: bool = False,
) -> float:
    """When `check()` (a Tally's count, no request; or `resumed`) first reached `target`
    (time.perf_counter()), looked at every WAIT_STEP seconds; progress goes to stderr every 30 s.
    Past `timeout` seconds it raises SystemExit, or (`partial`) returns then, the count short."""
    start = told = time.perf_counter()
    while (done := check()) < target:
        if proc is not None and proc.poll() is not None:
            exited = proc.returncode
            raise SystemExit(f"the operator exited ({exited}) while waiting for {what}: {done}/{target}")
        if time.perf_counter() - start > timeout:
            if partial:
                ended = f"  {what}: {done}/{target} when its {timeout:.0f} s had run out"
                print(ended, file=sys.stderr, flush=True)
                return time.perf_counter()
            raise SystemExit(f"timed out waiting for {what}: {done}/{target}")
        if time.perf_counter() - told > 30:
            told = time.perf_counter()
            print(f"  {what}: {done}/{target} after {told - start:.0f} s", file=sys.stderr, flush=True)
        time.sleep(WAIT_STEP)
    return time.perf_counter()


def cpu_snapshot(cluster: LocalCluster, operator: int | None = None) -> dict[str, float]:
    """CPU seconds so far (`cpu_seconds`; NaN for one gone) of each control-plane process, of this
    bench (its watches, and the baseline's writes or the creates of the operator's objects), of the
    `operator` process if given, and of the whole machine (`machine_cpu_seconds`)."""
    taken = {name: cpu_seconds(pid) if alive else NAN for name, (pid, alive) in cluster.processes().items()}
    taken["bench"] = cpu_seconds(os.getpid())
    if operator is not None:
        taken["operator"] = cpu_seconds(operator)
    taken["machine"] = machine_cpu_seconds()
    return taken


def cpu_used(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """One line: the CPU seconds each process used between two `cpu_snapshot`s, largest first (one
    gone by either, or in one only: "(gone)", last), and the machine's, as cores busy on average over
    `seconds`."""
    used = {name: after.get(name, NAN) - before.get(name, NAN) for name in before.keys() | after.keys()}
    machine = used.pop("machine")
    known = sorted(((n, v) for n, v in used.items() if not math.isnan(v)), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{name} {value:.0f}" for name, value in known]
    parts += [f"{name} (gone)" for name in sorted(n for n, v in used.items() if math.isnan(v))]
    return f"{', '.join(parts)}; machine {machine:.0f} ({machine / seconds:.2f} cores busy)"


def api_requests(api: client.CustomObjectsApi) -> dict[str, float]:
    """The requests the apiserver has served so far, of every client, by "VERB resource[/subresource]"
    (its own counter apiserver_request_total, read from its /metrics; WATCH and LIST included)."""
    answer = api.api_client.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.data.decode()):
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            what = labels.get("resource", "") + (
                f"/{labels['subresource']}" if labels.get("subresource") else ""
            )
            key = f"{labels.get('verb', '?')} {what or '(non-resource)'}"
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def requests_used(before: dict[str, float], after: dict[str, float], objects: int) -> dict[str, float]:
    """The requests served between two `api_requests` readings, per object, by verb and resource."""
    return {key: (after.get(key, 0.0) - before.get(key, 0.0)) / objects for key in after}


def requests_table(fleets: dict[str, dict[str, float]], least: float = 0.05) -> list[str]:
    """Lines comparing `requests_used` of each fleet: the total, then each verb and resource that some
    fleet sent at least `least` times per object, the largest excess over the first fleet first."""
    names = list(fleets)
    keys = {k for used in fleets.values() for k, v in used.items() if v >= least}

    def excess(key: str) -> float:
        return max(fleets[f].get(key, 0.0) for f in names) - fleets[names[0]].get(key, 0.0)

    rows = [("in all", [sum(fleets[f].values()) for f in names])]
    rows += [(k, [fleets[f].get(k, 0.0) for f in names]) for k in sorted(keys, key=lambda k: (-excess(k), k))]
    width = max(len(k) for k, _ in rows)
    lines = [f"  {'':{width}}  " + "  ".join(f"{f:>9}" for f in names)]
    lines += [f"  {k:{width}}  " + "  ".join(f"{v:9.2f}" for v in values) for k, values in rows]
    return lines


def control_plane_peaks(cluster: LocalCluster) -> str:
    """Each control-plane process's peak RSS (VmHWM), MiB: what bounds the count this machine can run."""
    peaks = []
    for name, (pid, alive) in sorted(cluster.processes().items()):
        try:
            peaks.append(f"{name} {rss_mib(pid)[1]:.0f}" if alive else f"{name} (gone)")
        except OSError:  # it exited since
            peaks.append(f"{name} (gone)")
    return ", ".join(peaks)


def environment_variable(item: str) -> str:
    """`NAME=VALUE`, checked as the command line is read (not after an hour of baseline)."""
    name, eq, _ = item.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"{item!r} is not NAME=VALUE")
    return item


def at_10k(idle: float, rss: float, objects: int) -> float:
    """RSS (MiB) at 10,000 objects: `idle` plus 10,000 times what each of `objects` cost above it."""
    return idle + (rss - idle) * 10_000 / objects


def main() -> None:
    import arguments  # bench/arguments.py, beside this script

    parser = arguments.parser(__doc__)
    parser.add_argument("--objects", type=int, default=1000, help="ModelDeployments to create")
    parser.add_argument(
        "--more",
        type=int,
        help="objects created after the first ones are Ready, for the cost of one more"
        " (none given: a quarter of --objects; none with --restart-when-written)",
    )
    parser.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="skip the last phase: the operator restarted with every object and child in place (run"
        " like the first, so under --tracemalloc its RSS carries tracemalloc's own)",
    )
    beginning = parser.add_mutually_exclusive_group()
    beginning.add_argument(
        "--create-rate",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="create the operator's objects at this rate (default: as fast as the apiserver takes them):"
        " how much of the RSS per object a burst of them costs",
    )
    beginning.add_argument(
        "--cold-start",
        action="store_true",
        help="create every object before the operator starts, and start its clock with the operator (a"
        " first start on a cluster that has them, as the runs before 2026-12-05 did; the baseline's objects"
        " are then created before its clock too)",
    )
    parser.add_argument(
        "--no-direct",
        dest="direct",
        action="store_false",
        help="skip the baseline (no ratios): the operator's fleet alone, for the operator's RSS at counts"
        " where a run of both would take too long",
    )
    parser.add_argument(
        "--operator-first",
        action="store_true",
        help="run the operator's fleet before the baseline's (each on its own control plane, so only"
        " the machine's state differs: what the order leaves in the ratio)",
    )
    parser.add_argument(
        "--restart-when-written",
        action="store_true",
        help="restart the operator as soon as every child Deployment is seen, before its objects are Ready"
        " (no time to Ready then; needs --no-direct and no --more above 0): a restart at 10,000, whose Ready"
        " phase at the controller-manager's pace takes hours here, within a session",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds each phase may take")
    parser.add_argument(
        "--ready-within",
        type=float,
        default=None,
        metavar="SECONDS",
        help="bound the Ready phases: each fleet's ends SECONDS after its first create (the second's also"
        " once it has as many Ready as the first had); the ratio is printed at each 5%% of the objects both"
        " reached and at the most both reached (needs --more 0 and no --restart-when-written): a ratio at"
        " 10,000, whose whole Ready phase takes hours here",
    )
    parser.add_argument(
        "--apiserver-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a further kube-apiserver flag, repeatable, given with '=' (--apiserver-arg=--watch-cache=false:"
        " the watch cache is a large part of the apiserver's memory)",
    )
    parser.add_argument(
        "--controller-manager-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a further kube-controller-manager flag, repeatable, given with '='"
        " (--controller-manager-arg=--kube-api-qps=100 --controller-manager-arg=--kube-api-burst=200:"
        " its client's default of 20 requests per second, burst 30, sets the pace of the rollouts)",
    )
    parser.add_argument(
        "--malloc-arena-max",
        type=int,
        default=0,
        help="MALLOC_ARENA_MAX for the operator (0: glibc's default)",
    )
    parser.add_argument(
        "--operator-env",
        action="append",
        type=environment_variable,
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the operator, repeatable (for example an allocator:"
        " LD_PRELOAD=libjemalloc.so.2 with PYTHONMALLOC=malloc)",
    )
    heap = parser.add_mutually_exclusive_group()
    heap.add_argument(
        "--allocators",
        action="store_true",
        help="ask the operator for pymalloc's and glibc's own accounts at each reading (where the"
        " anonymous memory is: live blocks, or free space an allocator keeps)",
    )
    heap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the operator under tracemalloc and print where its Python heap is, by package and line",
    )
    parser.add_argument(
        "--tracemalloc-frames",
        type=int,
        default=1,
        help="frames tracemalloc keeps per allocation; above 1 it also prints the top tracebacks",
    )
    args = parser.parse_args()
    if args.operator_first and not args.direct:
        parser.error("--operator-first needs the baseline (it is left out by --no-direct)")
    if args.ready_within is not None and (args.more is None or args.more or args.restart_when_written):
        parser.error(
            "--ready-within needs --more 0 (further objects wait for all Ready) and no --restart-when-written"
        )
    if args.restart_when_written and (args.direct or args.more or not args.restart):
        parser.error(
            "--restart-when-written needs --no-direct and no --more above 0 (both wait for Ready),"
            " and the restart"
        )
    n = args.objects
    more = n // 4 if args.more is None and not args.restart_when_written else args.more or 0
    cpu: dict[str, str] = {}  # each fleet's CPU seconds, from its first create to all Ready (or the bound)
    requests: dict[str, dict[str, float]] = {}  # and the apiserver's requests per object, the same time
    reached: dict[str, list[float]] = {}  # --ready-within: each fleet's seconds to its k-th object Ready
    peaks: dict[str, str] = {}  # each fleet's control plane's peak RSS

    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        registry = Path(tmp) / "registry"
        model = Path(tmp) / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0, value=1, passed=True)]
        register(LocalStore(registry), "bench", model, metrics={}, gates=gates, lineage=Lineage())

        @contextlib.contextmanager
        def control_plane(fleet: str, count: int) -> Iterator[tuple[LocalCluster, client.CustomObjectsApi]]:
            """A fresh control plane for one fleet of `count` objects, its CRDs and its namespace:
            each fleet runs on its own, so neither pays for the other's objects (the second fleet on a
            shared one cost 53-73 more CPU seconds than the first in one pair of 2026-12-05's runs
            at 1,000, most in the apiserver and the controller-manager: docs/operations.md)."""
            nodes = [  # room for the fleet's pods: 110 per kwok node
                FakeNode(f"kwok-bench-{i}", cpu="64", memory="256Gi")
                for i in range(count * PODS_PER_OBJECT // 100 + 1)
            ]
            cluster = LocalCluster(
                Path(tmp) / f"cluster-{fleet}",
                nodes=(*DEFAULT_NODES, *nodes),
                tie_to_parent=True,
                apiserver_args=tuple(args.apiserver_arg),
                controller_manager_args=tuple(args.controller_manager_arg),
            )
            cluster.start()
            try:
                cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
                cluster.wait_established(f"crd/{MODEL_DEPLOYMENT.crd_name}")
                cluster.kubectl("create", "namespace", fleet)
                api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
                api_client.configuration.connection_pool_maxsize = WORKERS
                yield cluster, client.CustomObjectsApi(api_client)
            finally:
                try:
                    peaks[fleet] = control_plane_peaks(cluster)
                    told = f"{fleet}'s control plane, peak RSS (MiB): {peaks[fleet]}"
                    print(told, file=sys.stderr, flush=True)
                finally:
                    cluster.stop(remove=True)

        owner = objects(1, registry)[0]  # only to count the children: an owner never created
        owner["metadata"].update(namespace="direct", uid="0")
        children_each = len(children_of(owner))

        def bounded(start: float) -> tuple[int, float]:
            return ready_phase(reached, n, start, args.ready_within)

        def direct_fleet() -> tuple[float, float]:
            """The baseline: the same objects and children, written directly by a pool of WORKERS
            threads, each creating an object (at --create-rate, if given) and applying its children
            (--cold-start: the objects first, before the clock, as the operator's are then). Counted
            as the operator's fleet is, by the same two watches. (every Deployment seen, every one
            available), seconds from the first create."""
            with control_plane("direct", n) as (cluster, api):
                applier = Applier(Kube.from_environment(cluster.kubeconfig))
                applier.kube.resource("apps/v1", "Deployment")  # discovery before the clock starts
                time.sleep(IDLE_SECONDS)  # the machine settles, as it does before the operator's fleet
                parts = {}  # each child Deployment's name -> its object's
                for body in objects(n, registry):
                    body["metadata"].update(namespace="direct", uid="0")
                    name = body["metadata"]["name"]
                    parts.update(
                        (c["metadata"]["name"], name) for c in children_of(body) if c["kind"] == "Deployment"
                    )
                assert len(parts) == 2 * n, "two Deployments per object, as the writes count"
                firsts = Firsts(parts)
                available = Tally(api, DEPLOYMENTS, "direct", rolled_out, firsts.changed)
                owned = Tally(api, (GROUP, VERSION, PLURAL), "direct", is_ready)  # read by neither: its load
                owners = create_all(api, "direct", objects(n, registry)) if args.cold_start else None
                start = time.perf_counter()
                used, served = cpu_snapshot(cluster), api_requests(api)

                def write(item: tuple[int, dict]) -> None:
                    i, body = item
                    if args.create_rate:
                        time.sleep(max(0.0, start + i / args.create_rate - time.perf_counter()))
                    created = body if owners else api.create_namespaced_custom_object(
                        GROUP, VERSION, "direct", PLURAL, body
                    )  # fmt: skip
                    for manifest in children_of(created):
                        applier.apply(manifest)

                with ThreadPoolExecutor(WORKERS) as pool:
                    writes = [pool.submit(write, item) for item in enumerate(owners or objects(n, registry))]

                    def seen() -> int:
                        for failed in (w for w in writes if w.done() and w.exception() is not None):
                            failed.result()  # raises the write's error here
                        return available.existing()

                    written = wait("direct Deployments written", seen, 2 * n, args.timeout)
                    for w in writes:  # the rest of the children, and any error
                        w.result()
                if args.ready_within is None:
                    ready = wait("direct Deployments", available.meeting, 2 * n, args.timeout)
                else:
                    what = "direct objects Ready (both Deployments available)"
                    ready = wait(what, firsts.count, *bounded(start), partial=True)
                    reached["direct"] = [t - start for t in firsts.times if t <= ready]  # not after it ended
                cpu["direct"] = cpu_used(used, cpu_snapshot(cluster), ready - start)
                requests["direct"] = requests_used(served, api_requests(api), n)
                available.stop()
                owned.stop()
                return written - start, ready - start

        if args.direct and not args.operator_first:
            direct_created, direct_ready = direct_fleet()

        with control_plane("operator", n + more) as (cluster, api):
            log = open(Path(tmp) / "operator.log", "w")  # noqa: SIM115 - closed below
            env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
            if args.malloc_arena_max:
                env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
            env.update(item.split("=", 1) for item in args.operator_env)

            def traced(namespace: str) -> Path:
                return Path(tmp) / f"tracemalloc-{namespace}.txt"

            def operator(namespace: str, metrics_port: int = 0) -> subprocess.Popen:
                argv = ["operator", "--namespace", namespace, "--health-port", "0"]
                argv += ["--metrics-port", str(metrics_port)]
                if args.tracemalloc:
                    code = TRACED.format(out=str(traced(namespace)), argv=["llmops", *argv])
                    cmd = [sys.executable, "-X", f"tracemalloc={args.tracemalloc_frames}", "-c", code]
                elif args.allocators:
                    code = ALLOCATORS.format(out=str(Path(tmp) / "allocators.txt"), argv=["llmops", *argv])
                    cmd = [sys.executable, "-c", code]
                else:
                    cmd = [sys.executable, "-m", "llmops.cli", *argv]
                return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

            # Where the memory goes, first part: the operator with nothing to do (imports, clients).
            cluster.kubectl("create", "namespace", "idle")
            idle_proc = operator("idle")
            time.sleep(IDLE_SECONDS)
            idle, _ = rss_mib(idle_proc.pid)
            accounts = Path(tmp) / "allocators.txt"

            def layout_of(p: subprocess.Popen) -> str:
                mapped = mappings_mib(p.pid)  # before the accounts' dump thread adds a stack
                return where(mapped, args.allocators and allocators(accounts, p))

            layout = {"idle": layout_of(idle_proc)}
            heaps: dict[str, str] = {}  # --tracemalloc: when -> the operator's heap then

            def heap_of(p: subprocess.Popen, count: int, when: str) -> str:
                """The heap of `p`, an operator under tracemalloc, now; per object beyond its idle one."""
                traced("operator").unlink(missing_ok=True)  # a restarted operator writes to the same file
                p.send_signal(signal.SIGUSR1)
                wait("the tracemalloc snapshot", lambda: int(traced("operator").exists()), 1, 120, p)
                heap = traced("operator").read_text()
                return (
                    heap
                    + "\n"
                    + per_object(traced("idle"), traced("operator"), count, args.tracemalloc_frames, when)
                )

            if args.tracemalloc:  # the same operator's heap with nothing to watch, to subtract
                idle_proc.send_signal(signal.SIGUSR1)
                wait("the idle tracemalloc snapshot", lambda: int(traced("idle").exists()), 1, 120, idle_proc)
            idle_proc.terminate()
            idle_proc.wait(60)

            # The operator: the same objects, from their creation (the operator running, watching)
            # until every one is Ready; --create-rate: they arrive at that rate. --cold-start: they
            # are all created first, and the clock starts with the operator.
            written = Tally(api, DEPLOYMENTS, "operator", lambda _: True)
            firsts = Firsts({o["metadata"]["name"]: o["metadata"]["name"] for o in objects(n, registry)})
            ready = Tally(api, (GROUP, VERSION, PLURAL), "operator", is_ready, firsts.changed)
            paced = pacer = None
            if args.cold_start:
                create_all(api, "operator", objects(n, registry))
                start = time.perf_counter()
                proc = operator("operator")
                used, served = cpu_snapshot(cluster, proc.pid), api_requests(api)
            else:
                proc = operator("operator")
                time.sleep(IDLE_SECONDS)
                start = time.perf_counter()
                used, served = cpu_snapshot(cluster, proc.pid), api_requests(api)
                pacer = ThreadPoolExecutor(1)
                paced = pacer.submit(create_all, api, "operator", objects(n, registry), args.create_rate)
            try:
                operator_created = (
                    wait(
                        "the operator's Deployments",
                        lambda: creating(paced) or written.existing(),
                        2 * n,
                        args.timeout,
                        proc,
                    )
                    - start
                )
                written.stop()
                if args.restart_when_written:  # no Ready phase: restarted as soon as every child is there
                    operator_ready = None
                else:
                    if args.ready_within is None:
                        operator_ready = wait("Ready ModelDeployments", ready.meeting, n, args.timeout, proc)
                    else:
                        bound = bounded(start)
                        operator_ready = wait(
                            "Ready ModelDeployments", firsts.count, *bound, proc, partial=True
                        )
                        reached["operator"] = [t - start for t in firsts.times if t <= operator_ready]
                    operator_ready -= start
                    cpu["operator"] = cpu_used(used, cpu_snapshot(cluster, proc.pid), operator_ready)
                    requests["operator"] = requests_used(served, api_requests(api), n)
                if pacer is not None:
                    pacer.shutdown(cancel_futures=True)
                rss, peak = rss_mib(proc.pid)
                time.sleep(SETTLE_SECONDS)
                settled, _ = rss_mib(proc.pid)
                layout["settled"] = layout_of(proc)
                if args.tracemalloc:
                    heaps["settled"] = heap_of(proc, n, "settled")
                if more:  # the cost of one more object, on top of a working operator's
                    create_all(api, "operator", objects(more, registry, first=n))
                    wait("Ready ModelDeployments", ready.meeting, n + more, args.timeout, proc)
                    time.sleep(SETTLE_SECONDS)
                    grown, _ = rss_mib(proc.pid)
                    layout[f"{more} more"] = layout_of(proc)
                ready_at_restart = ready.meeting()  # all n, unless --restart-when-written or --ready-within
                ready.stop()
                if args.restart:  # a restart: every object and child exists, each to be listed and resumed
                    proc.terminate()
                    proc.wait(60)
                    port = free_port()
                    start = time.perf_counter()
                    proc = operator("operator", port)
                    # Done with its start: a reconcile per object, none waiting for a place, then quiet
                    # (its CPU alone could look quiet while it waits on a slow listing).
                    restart_resumed = wait(
                        "reconciles since the restart (0 while objects wait, -1 before /metrics)",
                        lambda: resumed(port),
                        n + more,
                        args.timeout,
                        proc,
                    )
                    restart_resumed -= start
                    restart_quiet = wait_quiet(proc, args.timeout, since=start) - start
                    restart_rss, restart_peak = rss_mib(proc.pid)
                    layout["restarted"] = layout_of(proc)
                    if args.tracemalloc:
                        heaps["restarted"] = heap_of(proc, n + more, "restarted")
            finally:
                proc.terminate()
                proc.wait(60)
                log.close()

        if args.direct and args.operator_first:
            direct_created, direct_ready = direct_fleet()

    print(f"objects: {n} ModelDeployments, {children_each} children each, {PODS_PER_OBJECT} pods each")
    everyone = all(len(times) == n for times in reached.values())  # every object Ready in each fleet run
    operator_all = len(reached.get("operator", ())) == n or "operator" not in reached
    if args.direct:
        print(
            f"direct:   children written {direct_created:7.1f} s, "
            + (
                f"all Deployments available {direct_ready:7.1f} s"
                if "direct" not in reached
                else f"{len(reached['direct'])} of {n} objects Ready at {direct_ready:.1f} s"
            )
        )
    else:
        print("direct:   not run (--no-direct): no ratios")
    then = (
        "then restarted (--restart-when-written)"
        if operator_ready is None
        else f"all objects Ready {operator_ready:13.1f} s"
        if "operator" not in reached
        else f"{len(reached['operator'])} of {n} objects Ready at {operator_ready:.1f} s"
    )
    print(f"operator: children written {operator_created:7.1f} s, {then}")
    if reached:
        print(
            f"  (--ready-within {args.ready_within:.0f}: each fleet's Ready phase ended by then after its"
            " first create, the second's once it had as many Ready as the first)"
        )
    if args.direct and everyone:
        print(f"ratio direct/operator, to Ready: {direct_ready / operator_ready:.2f}")
    if args.direct:
        print(f"ratio direct/operator, children written: {direct_created / operator_created:.2f}")
    if args.direct and reached:
        print("seconds from each fleet's first create to its k-th object Ready: k, direct, operator, ratio")
        for k, d, o in ratios_at(reached["direct"], reached["operator"], n, steps=20):
            print(f"  {k:6d} {d:9.1f} {o:9.1f}   {d / o:.2f}")
    when = (
        "every child Deployment was seen (not Ready)"
        if operator_ready is None
        else "all were Ready"
        if operator_all
        else "its Ready phase ended"
    )
    print(
        f"operator RSS: {rss:.0f} MiB when {when}, {settled:.0f} MiB {SETTLE_SECONDS} s later,"
        f" peak {peak:.0f} MiB"
    )
    print(
        f"  of which idle (started, no objects): {idle:.0f} MiB; per object: "
        f"{(settled - idle) * 1024 / n:.1f} KiB settled, {(peak - idle) * 1024 / n:.1f} KiB at the peak"
    )
    start_of = "a first start of" if args.cold_start else "a stream of" if args.create_rate else "a burst of"
    if (
        operator_ready is not None and operator_all
    ):  # (a peak before the Ready phase is not the whole start's)
        print(
            f"  {start_of} 10,000 objects at that cost per object:"
            f" about {at_10k(idle, peak, n):.0f} MiB"
            " (extrapolated)"
        )
    if more:
        slope = (grown - settled) * 1024 / more
        at = grown + (10_000 - n - more) * slope / 1024
        print(
            f"  {more} more objects: settled {grown:.0f} MiB, {slope:.1f} KiB per further object; "
            f"10,000 added one by one would come to about {at:.0f} MiB (extrapolated; not what a start costs)"
        )
    if args.restart:
        print(
            f"restart with {n + more} objects ({ready_at_restart} Ready) and their children: peak"
            f" {restart_peak:.0f} MiB, settled {restart_rss:.0f} MiB once it had resumed them (as many"
            f" reconciles as objects after {restart_resumed:.1f} s) and its CPU went quiet"
            f" after {restart_quiet:.1f} s; a restart of 10,000"
            f" at that cost per object: about {at_10k(idle, restart_peak, n + more):.0f} MiB (extrapolated)"
        )
    for fleet, line in peaks.items():
        print(f"{fleet}'s control plane, peak RSS (MiB): {line}")
    if cpu:
        to = "the end of its Ready phase" if reached else "all Ready"
        print(f"CPU seconds from each fleet's first create (--cold-start: the operator's start) to {to}")
        print("  (bench: its watches, and the baseline's writes or the creates of the operator's objects):")
    for fleet, line in cpu.items():
        print(f"  {fleet}: {line}")
    if requests:
        print("The apiserver's requests per object over the same time (every client; WATCH: watches opened):")
        print("\n".join(requests_table(requests)))
    if args.apiserver_arg:
        print(f"(kube-apiserver {' '.join(args.apiserver_arg)})")
    if args.operator_first:
        print("(the operator's fleet ran first, the baseline's second, each on a control plane of its own)")
    if args.controller_manager_arg:
        print(f"(kube-controller-manager {' '.join(args.controller_manager_arg)})")
    source = "/proc/PID/smaps" + (", and the allocators' own accounts" if args.allocators else "")
    print(f"  where the RSS is (MiB; {source}):")
    for when, text in layout.items():
        print(f"    {when}: {text}")
    if args.malloc_arena_max:
        print(f"(MALLOC_ARENA_MAX={args.malloc_arena_max})")
    if args.operator_env:
        print(f"(the operator's environment: {' '.join(args.operator_env)})")
    for when, heap in heaps.items():
        print(
            f"the operator's Python heap when {when} (tracemalloc, which adds its own overhead to the RSS):"
        )
        print(heap)


if __name__ == "__main__":
    main()
