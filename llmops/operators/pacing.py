"""How often a kind's periodic resyncs come, so that all of them together come at a bounded rate.

A resync (a reconcile without a change, which applies every child again and so repairs what someone
else changed in them) costs a ModelDeployment about 13 requests to the apiserver. Every `period`
seconds for every object, that load grows with the count: 10,000 objects every 300 s are 33 resyncs
and some 430 requests a second, more than the control plane the operator runs beside can serve, and
the resyncs then crowd out the reconciles that changes ask for. `ResyncPacer` stretches the period to
objects ÷ `rate` seconds once there are more than period times rate objects (those waiting for
their first reconcile counted too), so their resyncs together come at most `rate` a second whatever
the count (the same reason controller-runtime's default resync is 10 hours and its reconciles read
a cache instead).

The same holds for any periodic reconcile whose count grows with the objects: a ModelDeployment that
follows an alias polls the registry every `alias_poll_seconds` (a poke and a reconcile each), paced by
its own `ResyncPacer` at `alias_poll_rate` a second; the retries of every kind (an object Stalled,
or whose registry does not answer), each kind's by its own `ResyncPacer` (runtime.Kind.retrying, at
runtime.Pace.retry_rate), an object forgotten as soon as it no longer retries; and every kind's polls
(`Outcome.poll`: a TrainingJob reading its run's progress, a ModelRetirement waiting on a drain, a
RetrainPolicy evaluating its triggers, a ModelDeployment looking at a suspend's drain or a lingering
child), likewise (runtime.Kind.polling, at runtime.Pace.poll_rate). Every rate is an operator setting
read from its environment (operators.settings.rate): LLMOPS_RESYNC_RATE, LLMOPS_ALIAS_POLL_RATE,
LLMOPS_RETRY_RATE, LLMOPS_POLL_RATE (docs/install.md, Operator settings).
"""

from __future__ import annotations

import heapq
import threading
import time


class ResyncPacer:
    """Counts the objects that ask for resyncs (each once, by uid) and gives each the period that
    keeps their resyncs at `rate` a second at most. An object that has not asked for twice the period
    it was given is no longer counted (deleted, or no longer resyncing), whatever the periods of the
    others (they are looked at in the order they lapse). Thread-safe; process-local."""

    def __init__(self) -> None:
        # uid -> when it lapses (time.monotonic(): when it last asked, plus twice the period it was given)
        self._asked: dict[str, float] = {}
        # (when it lapses, uid) for every ask, the earliest first (heapq); an entry whose uid asked
        # again since (a later lapse in `_asked`) or was forgotten is stale and dropped when reached
        self._lapses: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def period(self, uid: str, period: float, rate: float, waiting: int = 0) -> float:
        """The resync period of object `uid`, in seconds: max(`period`, (objects + `waiting`) ÷ `rate`),
        where `period` is the configured period (seconds), `rate` the resyncs a second allowed in all
        (> 0), and `waiting` the objects not counted yet that will ask once begun (those of the kind
        waiting for the operator's first reconcile: operators.backlog.not_begun). Without `waiting`,
        10,000 objects created at once would be counted only as they are begun, and the first
        thousands, given periods for the few counted so far, would all come due while the rest are
        still being begun. (Their first resyncs still come, spread, within one period of when each
        was begun: faster than `rate` when objects are begun faster than that. After a relisting,
        objects already counted may wait among the `waiting` for a while and count twice: a period
        up to twice as long, once.) Counts `uid` as asking now."""
        now = time.monotonic()
        with self._lock:
            self._asked.pop(uid, None)
            while self._lapses and self._lapses[0][0] < now:  # forget the objects that stopped asking
                lapsed, old = heapq.heappop(self._lapses)
                if self._asked.get(old) == lapsed:
                    del self._asked[old]
            given = max(period, (len(self._asked) + 1 + waiting) / rate)
            lapse = now + 2 * given
            self._asked[uid] = lapse
            heapq.heappush(self._lapses, (lapse, uid))
            self._compact()
            return given

    def forget(self, uid: str) -> None:
        """No longer count `uid` (it stopped asking: no wait for twice its period)."""
        with self._lock:
            self._asked.pop(uid, None)
            self._compact()

    def _compact(self) -> None:
        """Drop the stale lapses once they are most of them (objects that asked again, or were
        forgotten): the bookkeeping stays within twice the objects counted, plus 64."""
        if len(self._lapses) > 2 * len(self._asked) + 64:
            self._lapses = [(lapse, uid) for uid, lapse in self._asked.items()]
            heapq.heapify(self._lapses)

    def __len__(self) -> int:
        return len(self._asked)
