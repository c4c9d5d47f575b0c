"""The rules every store applies, written once; a backend only says how it reads and writes.

Both stores call these, so the SQLite store and the DynamoDB store cannot drift apart on
what a stored item means: when a gate, a timeline entry or a run has expired, when an event
id counts as seen, what a refused gate write says, which of two views of a run a cache
keeps. Whether a commit's conditions hold is :func:`runtime.records.commit_holds`, re-exported
here so a store finds every rule in one place.
"""

from __future__ import annotations

import os
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
    "state_bytes",
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


def same_name(remembered: str, name: str | None) -> bool:
    """Whether an event-log entry under ``remembered`` counts for an event named ``name``.

    An id is one event's with its name (``None``: any name): a sender allowed other names
    only cannot make an event a duplicate by taking its id first.
    """
    return name is None or remembered == name


def seen_within(received_at: float, *, now: float, ttl: float) -> bool:
    """Whether an event id received at ``received_at`` is still within its dedup window."""
    return received_at > dedup_cutoff(now, ttl)


#: How long a delivery's mark (``RunStore.mark_delivery``) is kept: longer than any
#: message's redeliveries last (SQS keeps a message 14 days, but its receives come within
#: maxReceiveCount visibility timeouts: 5 x 90 min at most).
MARK_SECONDS = 2 * 86_400.0
#: What one step record takes decoded, besides its counted output (keys, times, detail).
RECORD_BYTES = 1024
#: Decoded JSON (dicts, lists, str and int objects) takes about this many times its text.
DECODED_FACTOR = 5


def state_bytes(state: RunState) -> int:
    """About what ``state`` takes in memory, decoded: from the sizes its records counted.

    A step's output of 1 KiB or more records its JSON size (``output_bytes``, the one the
    32 MiB run limit counts); smaller ones are inside :data:`RECORD_BYTES`. Cheap: no
    encoding, one pass over the records.
    """
    counted = sum(int(rec.detail.get("output_bytes", 0)) for rec in state.steps.values())
    return RECORD_BYTES * (len(state.steps) + 1) + DECODED_FACTOR * counted


def default_cache_bytes() -> int | None:
    """A quarter of the Lambda's memory, or ``None`` outside a Lambda (no byte bound)."""
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    return int(memory) * 1024 * 1024 // 4 if memory and memory.isdigit() else None


class RunCache:
    """The runs a store loaded lately (LRU), so the next load reads only what is new.

    Keeps the newest view of each run: a view of the same run (same ``created_at``) at an
    older version never replaces a newer one, so a slow reader cannot set the cache back. A
    view with another ``created_at`` is another run under the same id and replaces it.
    Thread-safe: the local backend's worker threads share one store.

    Bounded by count and, in a Lambda, by bytes too (:func:`state_bytes`, what a run's
    decoded records take: about five times their JSON): a warm container caching a few
    large runs must not run out of memory, whatever their number.

    Args:
        size: How many runs to keep (0: none).
        max_bytes: How many bytes of runs to keep; ``None``: a quarter of the Lambda's
            memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``), or no byte bound outside one.
    """

    def __init__(self, size: int, max_bytes: int | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes if max_bytes is not None else default_cache_bytes()
        self._runs: OrderedDict[str, RunState] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def get(self, run_id: str) -> RunState | None:
        """The cached view of ``run_id``, if any (the caller must not change it)."""
        with self._lock:
            return self._runs.get(run_id)

    def put(self, state: RunState) -> None:
        """Keep ``state`` unless the cache holds a newer view of the same run."""
        run = state.run
        size = state_bytes(state) if self.max_bytes is not None else 0
        with self._lock:
            if self.max_bytes is not None and size > self.max_bytes:
                # Larger than the whole budget: not kept (nor an older view of it), and
                # nothing else is pushed out for it.
                self._runs.pop(run.run_id, None)
                self._total -= self._bytes.pop(run.run_id, 0)
                return
            cached = self._runs.get(run.run_id)
            if (cached is None or cached.run.created_at != run.created_at
                    or cached.run.version <= run.version):
                self._runs[run.run_id] = state
                self._runs.move_to_end(run.run_id)
                if self.max_bytes is not None:
                    self._total += size - self._bytes.get(run.run_id, 0)
                    self._bytes[run.run_id] = size
            while self._runs and (len(self._runs) > self.size or (
                    self.max_bytes is not None and self._total > self.max_bytes)):
                gone, _ = self._runs.popitem(last=False)
                self._total -= self._bytes.pop(gone, 0)

    def drop(self, run_id: str) -> None:
        """Forget ``run_id`` (it no longer exists)."""
        with self._lock:
            self._runs.pop(run_id, None)
            self._total -= self._bytes.pop(run_id, 0)

    def clear(self) -> None:
        """Forget every run."""
        with self._lock:
            self._runs.clear()
            self._bytes.clear()
            self._total = 0
