"""What the operator keeps of its children between watch events, for its reconciles to read
(`ChildViews`): the newest state of each, as little of it as the parent reads."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class View(Protocol):
    """What `ChildViews` keeps of one child: its uid, `metadata.generation`, and `body()`, a slim
    object of the child's kind holding the fields its parent reads (and its `fingerprint` reads)."""

    uid: str
    generation: int

    def body(self) -> dict: ...


V = TypeVar("V", bound=View)


class ChildViews(Generic[V]):
    """The newest known state of one kind of child, as much of it as `keep` retains, by (namespace,
    name): fed by the child watch (`record`: every event, the initial listing included) and by the
    answers to the parent's own applies and reads (`note`), and read by the parent's reconcile in place
    of a GET, as a controller-runtime client reads its informer's cache. Thread-safe (the watch runs in
    the event loop, reconciles in kopf's worker threads); process-local.

    Two sources, two rules. The watch is the authority: its events come in the order the apiserver made
    the changes, so each replaces the view of its child unless that view's generation is newer (an
    apply's answer noted ahead of the event that brings it). An answer may be older than an event
    already recorded, since a status change does not bump the generation: it replaces the view only
    when there is none, when it is of another uid (the child was made again), or when its generation
    is newer.

    A deletion (`forget`, the watch's DELETED; `discard`, by the reconcile that deletes the child)
    drops the view of that uid and, for DELETED_TTL seconds, refuses any view of that uid: an answer
    that arrives after the deletion does not bring the child back. A deletion the watch never
    delivered (it was re-listed after a gap) leaves a view behind until the child is applied again (at
    the latest at the parent's next resync, which applies every child) or deleted again.
    """

    DELETED_TTL = 60.0  # seconds a deleted child's uid is refused: far above an answer's delay

    def __init__(self, keep: Callable[[dict], V]) -> None:
        self.keep = keep
        self._views: dict[tuple[str, str], V] = {}
        # (namespace, name) -> (uid deleted, when: time.monotonic()), oldest first
        self._gone: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def record(self, body: dict) -> tuple[V | None, V | None]:
        """A watch event's object: keep it unless the view kept is of a newer generation. Returns (the
        view before, of the same uid, else None; the view kept now, None if the uid was deleted)."""
        return self._keep(body, authority=True)

    def note(self, body: dict) -> None:
        """An answer of the API (an apply's, a GET's): keep it if there is no view, the view is of
        another uid, or the answer's generation is newer."""
        self._keep(body, authority=False)

    def _keep(self, body: dict, authority: bool) -> tuple[V | None, V | None]:
        meta = body.get("metadata") or {}
        key = (sys.intern(meta.get("namespace") or ""), meta.get("name") or "")
        view = self.keep(body)
        with self._lock:
            self._expire()
            kept = self._views.get(key)
            before = kept if kept is not None and kept.uid == view.uid else None
            gone = self._gone.get(key)
            if gone is not None and gone[0] == view.uid:
                return before, None
            if (
                before is None
                or view.generation > before.generation
                or (authority and view.generation == before.generation)
            ):
                self._views[key] = view
                return before, view
            return before, before

    def forget(self, body: dict) -> V | None:
        """The child `body` was deleted (the watch says): drop its view, only of that uid, and refuse
        that uid for DELETED_TTL seconds. Returns the view dropped."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        with self._lock:
            self._bury(key, meta.get("uid") or "")
            kept = self._views.get(key)
            if kept is not None and kept.uid == meta.get("uid"):
                return self._views.pop(key)
        return None

    def discard(self, namespace: str, name: str) -> None:
        """The reconcile deleted this child: drop its view now, not when the watch says so."""
        with self._lock:
            kept = self._views.pop((namespace, name), None)
            if kept is not None:
                self._bury((namespace, name), kept.uid)

    def _bury(self, key: tuple[str, str], uid: str) -> None:
        self._gone.pop(key, None)  # to the end: the newest
        self._gone[key] = (uid, time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        while self._gone:
            key, (_, at) = next(iter(self._gone.items()))
            if now - at < self.DELETED_TTL:
                break
            del self._gone[key]

    def get(self, namespace: str, name: str) -> V | None:
        with self._lock:
            return self._views.get((namespace, name))

    def __len__(self) -> int:
        return len(self._views)
