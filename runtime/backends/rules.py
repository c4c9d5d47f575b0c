"""The rules every store applies, written once; a backend only says how it reads and writes.

Both stores call these, so the SQLite store and the DynamoDB store cannot drift apart on
what a stored item means: when a gate, a timeline entry or a run has expired, when an event
id counts as seen, what a refused gate write says, which of two views of a run a cache
keeps. Whether a commit's conditions hold is :func:`runtime.records.commit_holds`, re-exported
here so a store finds every rule in one place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from runtime.errors import GateMovedError
from runtime.records import Gate, GateWrite, RunState, commit_holds

__all__ = [
    "RunCache",
    "commit_holds",
    "dedup_cutoff",
    "expired",
    "gate_moved",
    "read_gate",
    "seen_within",
]


def expired(expires_at: float | None, now: float) -> bool:
    """Whether something stored with ``expires_at`` has expired at ``now``.

    ``None`` never expires; an item is still live at its very ``expires_at``. Stores read
    an expired item as absent even while it is still stored (DynamoDB's TTL deletes lazily,
    DynamoDB Local never; SQLite purges in passing).
    """
    return expires_at is not None and expires_at < now


def read_gate(state: dict[str, Any] | None, version: int, expires_at: float | None,
              now: float) -> Gate:
    """The gate a stored ``(state, version, expires_at)`` reads as at ``now``.

    An expired gate keeps its version (a writer must name it: the item is still there) but
    has no state.
    """
    return Gate(None if expired(expires_at, now) else state, version)


def gate_moved(moved: Sequence[GateWrite]) -> GateMovedError:
    """The error of a ``create_run`` refused because the gates ``moved`` changed version."""
    return GateMovedError("gate moved: " + ", ".join(
        f"{g.scope!r} key {g.key[:100]!r} (expected version {g.expect_version})"
        for g in moved))


def dedup_cutoff(now: float, ttl: float) -> float:
    """The receive time at or before which an event id no longer counts as seen."""
    return now - ttl


def seen_within(received_at: float, *, now: float, ttl: float) -> bool:
    """Whether an event id received at ``received_at`` is still within its dedup window."""
    return received_at > dedup_cutoff(now, ttl)


class RunCache:
    """The runs a store loaded lately (LRU), so the next load reads only what is new.

    Keeps the newest view of each run: a view of the same run (same ``created_at``) at an
    older version never replaces a newer one, so a slow reader cannot set the cache back. A
    view with another ``created_at`` is another run under the same id and replaces it.
    Thread-safe: the local backend's worker threads share one store.

    Args:
        size: How many runs to keep (0: none).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._runs: OrderedDict[str, RunState] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> RunState | None:
        """The cached view of ``run_id``, if any (the caller must not change it)."""
        with self._lock:
            return self._runs.get(run_id)

    def put(self, state: RunState) -> None:
        """Keep ``state`` unless the cache holds a newer view of the same run."""
        run = state.run
        with self._lock:
            cached = self._runs.get(run.run_id)
            if (cached is None or cached.run.created_at != run.created_at
                    or cached.run.version <= run.version):
                self._runs[run.run_id] = state
                self._runs.move_to_end(run.run_id)
            while len(self._runs) > self.size:
                self._runs.popitem(last=False)

    def drop(self, run_id: str) -> None:
        """Forget ``run_id`` (it no longer exists)."""
        with self._lock:
            self._runs.pop(run_id, None)

    def clear(self) -> None:
        """Forget every run."""
        with self._lock:
            self._runs.clear()
