"""Concurrency limits: the pure rules behind slots held by lease and the line that waits.

A limit of ``limit`` slots per key is split over shards of at most :data:`SHARD_SIZE` slots;
each slot is one small lease item (its holder's token, its work, its expiry), so taking or
giving back a slot is one conditional write of about 200 bytes whatever the limit, and a
crashed holder's slot frees itself when its lease lapses (a taker may take a lapsed slot).
Work that finds no free slot waits in a line of one small item per waiting invocation,
sorted by rank (its run's creation time less its priority factor, then its work id); a
release wakes the head of the line. No I/O here: :mod:`runtime.orchestration.slots` reads
and writes leases and places through the store's :class:`SlotStore` primitives.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

#: Slots per shard: a shard's leases are read in one bounded query (about 10 KB).
SHARD_SIZE = 50
#: Slots per line shard: a key's line is split in ``ceil(limit / LINE_SHARD_SLOTS)`` shards so
#: that no line partition takes more than ~3 writes per step for 250 slots' worth of steps.
LINE_SHARD_SLOTS = 250
#: How many places at the head of each line shard a taker reads (about 2 KB: 1 RCU).
LOOK = 5
#: A place lasts this long past its waiter's backstop timer: a waiter whose chain died
#: leaves the line instead of blocking it, and a backstop delivered late (a queue under
#: pushback) still finds its place (a backstop that finds none has nothing to do).
PLACE_GRACE = 900.0
#: The longest a waiter's backstop timer waits (SQS's own delay: no Scheduler timer).
MAX_BACKSTOP = 900.0
#: A woken place whose invocation has not taken a slot within this long may be woken again.
WAKE_STALE = 30.0
#: A function with a priority option lets the first step of each run that finds only the last
#: free slot wait this long in line before it takes it, so runs delivered together start in
#: rank order (with more free slots they all start at once: their order does not matter).
GATHER_SECONDS = 1.0
#: Ranks are stored shifted by this much so that sort keys of fixed width order them.
_RANK_SHIFT = 1e9


@dataclass(frozen=True)
class SlotLease:
    """One slot of a concurrency key, held by one delivery of one piece of work.

    Attributes:
        scope: The limit's scope (``concurrency:<fn>`` or ``concurrency:app:<app>``).
        key: The key value (``""``: one shared key).
        shard: Which shard of the key's slots.
        index: Which slot of the shard.
        token: Unique to one delivery: two copies of a message never share a slot.
        work: ``<run id>/<message id>``, for people.
        expires: When the lease lapses unless given back first.
    """

    scope: str
    key: str
    shard: int
    index: int
    token: str
    work: str
    expires: float

    def to_json(self) -> dict[str, Any]:
        """The lease as stored (without its address: scope, key, shard, index)."""
        return {"token": self.token, "work": self.work, "expires": self.expires}


@dataclass(frozen=True)
class LinePlace:
    """One invocation waiting for a slot: its place in its key's line.

    Attributes:
        scope: The limit's scope.
        key: The key value.
        shard: Which shard of the key's line (:func:`line_shard` of its work).
        rank: Run creation time less priority factor: lower goes first.
        work: ``<run id>/<message id>``: with ``rank``, the place's identity.
        message: The message to send when its turn comes (JSON of a ``Message``).
        round: The poll round of the waiter's current message chain (older copies drop).
        expires: When the place lapses unless its waiter comes back first.
        woken: When a release sent its message (``None``: not woken).
    """

    scope: str
    key: str
    shard: int
    rank: float
    work: str
    message: dict[str, Any]
    round: int
    expires: float
    woken: float | None = None

    @property
    def order(self) -> tuple[float, str]:
        """The place's order in line."""
        return (self.rank, self.work)

    @property
    def sort_key(self) -> str:
        """A string whose order is the line's order (stores sort places by it)."""
        return place_sort_key(self.rank, self.work)

    def to_json(self) -> dict[str, Any]:
        """The place's changing part as stored."""
        return {"message": self.message, "round": self.round, "expires": self.expires,
                "woken": self.woken}

    @classmethod
    def of(cls, scope: str, key: str, shard: int, rank: float, work: str,
           raw: dict[str, Any]) -> LinePlace:
        """A stored place read back."""
        woken = raw.get("woken")
        return cls(scope, key, shard, rank, work, dict(raw["message"]), int(raw["round"]),
                   float(raw["expires"]), None if woken is None else float(woken))


def place_sort_key(rank: float, work: str) -> str:
    """The sort key of a place: the rank, fixed width, then the work id."""
    return f"{rank + _RANK_SHIFT:020.6f}#{work}"


def rank_of(sort_key: str) -> tuple[float, str]:
    """Inverse of :func:`place_sort_key`: ``(rank, work)``."""
    raw, _, work = sort_key.partition("#")
    return float(raw) - _RANK_SHIFT, work


def shard_sizes(limit: int) -> list[int]:
    """How many slots each shard of a ``limit`` holds: ``ceil(limit / SHARD_SIZE)`` shards."""
    count = max(1, math.ceil(limit / SHARD_SIZE))
    return [limit // count + (1 if i < limit % count else 0) for i in range(count)]


def line_shards(limit: int) -> int:
    """How many shards a key's line has: one per :data:`LINE_SHARD_SLOTS` slots."""
    return max(1, math.ceil(limit / LINE_SHARD_SLOTS))


def line_shard(work: str, limit: int) -> int:
    """The line shard ``work`` waits in (the same for every message of one wait)."""
    return zlib.crc32(work.encode()) % line_shards(limit)


def free_indexes(leases: Sequence[SlotLease], size: int, now: float) -> list[int]:
    """The slots of a shard of ``size`` no live lease holds (a lapsed lease frees its slot)."""
    held = {lease.index for lease in leases if lease.expires > now}
    return [i for i in range(size) if i not in held]


def live(places: Sequence[LinePlace], now: float) -> list[LinePlace]:
    """The places not lapsed, in line order."""
    return sorted((p for p in places if p.expires > now), key=lambda p: p.order)


def ahead_of(places: Sequence[LinePlace], rank: float, work: str) -> list[LinePlace]:
    """The places ranked before ``(rank, work)``, in line order."""
    return [p for p in places if p.order < (rank, work)]


def wakeable(place: LinePlace, now: float) -> bool:
    """Whether a release may wake ``place``: never woken, or woken so long ago it was lost."""
    return place.woken is None or place.woken <= now - WAKE_STALE


def yields(ahead: Sequence[LinePlace], free: int) -> bool:
    """Whether a taker with ``ahead`` live places ranked before it leaves the slots to them.

    It yields when the places ahead could take every one of the ``free`` slots it found:
    those waiting go first, and a place woken lately is on its way to a slot and is waited
    for too. (``ahead`` comes from the head of the line, at most :data:`LOOK` places.)
    """
    return len(ahead) >= free


def to_wake(places: Sequence[LinePlace], now: float, count: int = 1) -> list[LinePlace]:
    """The first ``count`` live places that may be woken, in line order."""
    return [p for p in live(places, now) if wakeable(p, now)][:count]


def woken(place: LinePlace, now: float) -> LinePlace:
    """``place`` marked woken at ``now``."""
    return replace(place, woken=now)


def backstop(lease_s: float, gather: bool, round: int = 1) -> float:
    """How long a waiter's timer waits before it asks again, unless woken first.

    The lease duration at first: a slot held by a crashed worker lapses by then (no release
    wakes the line for it), and a wake-up lost to a crash is made good. A waiter still in
    line at its next round (a long line, whose releases will wake it) doubles its wait, up
    to :data:`MAX_BACKSTOP`, so a long wait costs a few timers, not one per lease duration.
    A first step gathering for priority waits only :data:`GATHER_SECONDS`.
    """
    if gather:
        return GATHER_SECONDS
    return float(min(max(lease_s, MAX_BACKSTOP), lease_s * 2.0 ** max(0, round - 1)))
