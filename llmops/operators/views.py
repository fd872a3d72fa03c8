"""What the operator keeps of its children between watch events, for its reconciles to read
(`ChildViews`): the newest state of each, as little of it as the parent reads."""

from __future__ import annotations

import sys
import threading
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
    name): fed by the child watch (every event, the initial listing included) and by the parent's own
    applies and reads (`record`), and read by the parent's reconcile in place of a GET, as a
    controller-runtime client reads its informer's cache. Thread-safe (the watch runs in the event
    loop, reconciles in kopf's worker threads); process-local.

    Ordering: a view replaces the one kept for the same child (uid) only when its generation is not
    older, so a watch event that arrives after an apply's answer (which the reconcile recorded) does not
    take the state back; a child of another uid (deleted and made again) replaces it whatever its
    generation. A deletion drops the view of that uid only. A deletion the watch never delivered (it
    was re-listed after a gap) leaves a view behind until the child is applied again (at the latest at
    the parent's next resync, which applies every child) or its name is deleted again.
    """

    def __init__(self, keep: Callable[[dict], V]) -> None:
        self.keep = keep
        self._views: dict[tuple[str, str], V] = {}
        self._lock = threading.Lock()

    def record(self, body: dict) -> tuple[V | None, V]:
        """Keep what `body` (a child as the API returned it) says, unless the view kept is newer.
        Returns (the view before, the view kept now), the before of another uid as None."""
        meta = body.get("metadata") or {}
        key = (sys.intern(meta.get("namespace") or ""), meta.get("name") or "")
        view = self.keep(body)
        with self._lock:
            before = self._views.get(key)
            if before is not None and before.uid != view.uid:
                before = None
            if before is None or view.generation >= before.generation:
                self._views[key] = view
                return before, view
            return before, before

    def forget(self, body: dict) -> V | None:
        """The child `body` was deleted: drop its view (only of that uid). Returns the view dropped."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        with self._lock:
            kept = self._views.get(key)
            if kept is not None and kept.uid == meta.get("uid"):
                return self._views.pop(key)
        return None

    def get(self, namespace: str, name: str) -> V | None:
        with self._lock:
            return self._views.get((namespace, name))

    def __len__(self) -> int:
        return len(self._views)
