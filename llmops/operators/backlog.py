"""The objects that kopf has not begun yet, held as compressed bytes until it has a place for them
(`Backlog`), so that a start with every object already there, or a listing of thousands of them
again, does not queue them all inside kopf at once.

kopf (pinned to 1.45) reads each watch stream as fast as it comes and, for every object it has no
worker for, makes one at once: the event's parsed object in a queue of its own, and a worker that
waits for one of `settings.queueing.worker_limit` places. At a start every existing object is in the
first list, so all of them wait like that together, about 11 KiB each beyond what the object costs
once reconciled, and the allocators keep that memory after the burst (docs/operations.md, "What a
start's queue costs"). The same happened to a kind of child whenever kopf listed it again (its watch
expired: after an apiserver restart, or etcd's compaction): at 10,000 ModelDeployments one listing
of their 30,000 NetworkPolicies took the operator from 174 to 271 MiB in a minute; those events no
longer reach kopf at all (operators.main: DELETIONS_ONLY, DIRECT). The backlog sits
between kopf's listing-and-watch (`continuous_watch`) and its watcher, for the kinds' own resources
(operators.main's GATED):

- an event of an object kopf has a worker for (running, or waiting for its place) passes at once,
  so a worker waiting for its own patch to come back by the watch (kopf's consistency wait, up to
  `settings.persistence.consistency_timeout`) gets it without delay; so does everything that is not
  an object's event (bookmarks: kopf makes no worker for them);
- another object's event passes when fewer than `limit` objects have a worker and nothing is held
  before it; otherwise it is held, its object as zlib-compressed JSON, in arrival order, in one of
  two lines: `fresh`, the objects listed or ADDED since the stream began and not passed yet (after
  a relisting that includes objects kopf had before: they come back as a listing), and `changed`, a
  change or deletion of an object kopf has already had (a MODIFIED or DELETED event of an object not
  held: the stream delivered the object before, and this backlog let it pass; an edit, a deletion, or
  the operator's own poke for a reconcile it asked for: a child changed, a clock, a resync). A newer
  event of a held object replaces the held one in its place in its line; one of the initial listing
  (type None, which kopf reads as "resume") keeps that type, so the object is still resumed, and is
  marked `CHANGED_SINCE_LISTED`, so that a parent watching the object as a child (a RetrainPolicy its
  TrainingJobs: the only children gated, since operators.main hands the events of any other kind of
  child straight to its watch, DIRECT), which takes a listing of a child it has not met
  for its state, not a change, sees the change (operators.runtime's child watch); unless the newer
  one is its deletion (DELETED waits in line too: a namespace deleted with thousands of objects
  would otherwise hand them to kopf at once; kopf needs it to forget the object, and a parent
  watching it as a child to notice);
- when a worker ends (`finished`, from the wrap of kopf's `worker`), held objects pass, decoded
  again, while fewer than `limit` have a worker: the oldest of a line, the lines taking turns while
  both hold something, so neither waits for the other to empty. Without the turns the changes would
  wait behind every object not yet begun: at 10,000 ModelDeployments created at once, an object
  whose Deployments were available waited for its Ready status until the last of the 10,000 had
  been begun, half an hour (docs/operations.md, "The to-Ready ratio at 10,000, within a bound").
  With them a change waits for at most about as many places as there are changes before it, twice
  over, and an object not yet begun no longer than twice its own line (a line of changes that
  keeps filling cannot starve it). Resyncs come through the `changed` line too, at a rate paced
  for the whole kind (operators.pacing), which counts the objects still in `fresh` (`not_begun`),
  so a mass create does not bring the first objects' resyncs due while the rest wait to begin.
  controller-runtime's priority queue (0.20, opt-in; its design doc, "Priority Queue") likewise
  puts what a start's listing brings, and its resyncs, behind the changes that come meanwhile,
  strictly; here an object created meanwhile waits with the listed ones (it has nothing to show
  yet), and strict order would let a steady stream of children's pokes hold back every new object.

The stream is read by a task of its own into a queue that is drained as it fills, so the watch is
never held up: only what kopf has not begun waits. When the stream ends (an expired list, a watch
that must start over), the held deletions pass at once, places or not (a listing does not bring
them back), and the rest is dropped: kopf lists again, and every object still there comes again; when
kopf's watcher ends, the reading stops with it (`watching`), whether or not kopf closed the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from llmops.operators.metrics import WAITING

_FREED = object()  # a worker ended: look at what is held
_END = object()  # the stream ended
# The key, in a listing's event (type None) that kopf gets from the line, saying the object changed
# after it was listed (the event carries its newest state): kopf ignores it, the child watch reads it.
CHANGED_SINCE_LISTED = "llmops.io/changedSinceListed"
_LISTED_THEN_CHANGED = "listed, then changed"  # the held event type of such an object


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Backlog:
    """One watched resource (in one namespace, or cluster-wide): which objects kopf
    has a worker for (`live`, by uid) and what waits for a place, in two lines (`fresh`: not begun;
    `changed`: begun before; each uid -> (event type, or `_LISTED_THEN_CHANGED`; compressed object),
    in arrival order). `limit` is kopf's `settings.queueing.worker_limit`;
    `name` labels the llmops_operator_objects_waiting gauge (the resource's plural), which adds up
    what every backlog of that resource holds."""

    def __init__(self, limit: int, name: str = "") -> None:
        self.limit = limit
        self.plural = name
        self._waiting = WAITING.labels(name)
        self.live: set[str] = set()
        self.fresh: dict[str, tuple[str | None, bytes]] = {}
        self.changed: dict[str, tuple[str | None, bytes]] = {}
        self._changed_next = True  # whose turn it is while both lines hold something
        self._inbox: asyncio.Queue[Any] | None = None
        self._reader: asyncio.Task[None] | None = None

    def admit(self, event: Any) -> Any | None:
        """The event to hand to kopf now, or None when it is held."""
        uid = _uid(event)
        if uid is None or uid in self.live or event.get("type") == "BOOKMARK":
            return event  # kopf makes no worker for a bookmark: it takes no place
        if self.fresh or self.changed or len(self.live) >= self.limit:
            kind = event.get("type")
            if uid in self.fresh:
                line = self.fresh
            elif uid in self.changed or kind in ("MODIFIED", "DELETED"):
                line = self.changed  # the stream delivered it before and it passed: kopf has had it
            else:
                line = self.fresh  # listed (None) or ADDED: kopf has not begun it
            if kind != "DELETED" and uid in line and line[uid][0] in (None, _LISTED_THEN_CHANGED):
                kind = _LISTED_THEN_CHANGED  # still the initial listing's: kopf resumes it
            data = zlib.compress(json.dumps(event["object"]).encode(), 1)
            if uid not in line:
                self._waiting.inc()
            line[uid] = (kind, data)
            return None
        self.live.add(uid)
        return event

    def __len__(self) -> int:
        """How many objects are held, in both lines."""
        return len(self.fresh) + len(self.changed)

    def release(self) -> Any | None:
        """The next held object's event, when there is one and a place for it: the oldest of the
        line whose turn it is (the lines take turns while both hold something)."""
        if not (self.fresh or self.changed) or len(self.live) >= self.limit:
            return None
        line = self.changed if self.changed and (self._changed_next or not self.fresh) else self.fresh
        if self.changed and self.fresh:
            self._changed_next = line is self.fresh
        uid = next(iter(line))
        kind, data = line.pop(uid)
        self._waiting.dec()
        self.live.add(uid)
        obj = json.loads(zlib.decompress(data))
        if kind == _LISTED_THEN_CHANGED:
            return {"type": None, "object": obj, CHANGED_SINCE_LISTED: True}
        return {"type": kind, "object": obj}

    def deletions(self) -> list[Any]:
        """The held deletions (the `changed` line's, then the `fresh` line's, each in its order), taken
        out of their lines whether or not there is a place:
        when the stream ends, kopf lists again, and a listing brings back every object held but not
        one deleted meanwhile, whose DELETED kopf would then never get (nor a parent watching it as
        a child: a Deployment's view, a child to apply again)."""
        events = []
        for line in (self.changed, self.fresh):
            for uid in [uid for uid, (kind, _) in line.items() if kind == "DELETED"]:
                _, data = line.pop(uid)
                self._waiting.dec()
                self.live.add(uid)
                events.append({"type": "DELETED", "object": json.loads(zlib.decompress(data))})
        return events

    def finished(self, uid: str) -> None:
        """kopf's worker for `uid` ended."""
        if uid in self.live:
            self.live.discard(uid)
            if self._inbox is not None:
                self._inbox.put_nowait(_FREED)

    async def gate(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """`stream`'s events, held back as above."""
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in stream:
                    inbox.put_nowait(event)
                inbox.put_nowait(_END)
            except asyncio.CancelledError as e:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # stopped (`stop`)
                inbox.put_nowait(_Failed(e))  # not a cancellation of this task: the stream's own error
            except BaseException as e:  # handed to the reader, which raises it as the stream would
                inbox.put_nowait(_Failed(e))

        self._inbox = inbox
        self._reader = reader = asyncio.create_task(pump(), name="llmops backlog reader")
        try:
            while True:
                while (event := self.release()) is not None:
                    yield event
                item = await inbox.get()
                if item is _FREED:
                    continue
                if item is _END or isinstance(item, _Failed):
                    for event in self.deletions():  # what a listing again would not bring back
                        yield event
                    if isinstance(item, _Failed):
                        raise item.error
                    return
                if (event := self.admit(item)) is not None:
                    yield event
        finally:
            self.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def stop(self) -> None:
        """The stream ended, or kopf's watcher did: stop reading it, drop what is held."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        self._inbox = None
        self._waiting.dec(len(self))
        self.fresh.clear()
        self.changed.clear()


_backlogs: dict[tuple[Any, Any], Backlog] = {}  # (kopf's resource, namespace or None) -> its backlog


@contextlib.contextmanager
def watching(resource: Any, namespace: Any, limit: int) -> Iterator[Backlog]:
    """While kopf's watcher of `resource` in `namespace` (None: cluster-wide) runs: its backlog, which
    its streams (`of`) and its workers' ends (`finished`) find. The watcher's workers end with it, so
    a watcher started again starts with an empty backlog."""
    key = (resource, namespace)
    line = _backlogs[key] = Backlog(limit, getattr(resource, "plural", str(resource)))
    try:
        yield line
    finally:
        line.stop()  # a stream kopf left unclosed would otherwise read on until collected
        if _backlogs.get(key) is line:
            del _backlogs[key]


def of(resource: Any, namespace: Any) -> Backlog | None:
    """The backlog of the running watcher of `resource` in `namespace`, if it has one."""
    return _backlogs.get((resource, namespace))


def not_begun(plural: str) -> int:
    """How many objects of the resource `plural` wait for kopf's first look in every namespace's
    backlog (their `fresh` lines: listed or added since their stream began, not passed yet)."""
    return sum(len(line.fresh) for line in list(_backlogs.values()) if line.plural == plural)


def finished(resource: Any, uid: str) -> None:
    """kopf's worker for the object `uid` of `resource` ended (its key: kopf's `ObjectRef`)."""
    for (watched, _), backlog in list(_backlogs.items()):
        if watched == resource:
            backlog.finished(uid)


def _uid(event: Any) -> str | None:
    if not isinstance(event, dict) or not isinstance(obj := event.get("object"), dict):
        return None
    return (obj.get("metadata") or {}).get("uid")
