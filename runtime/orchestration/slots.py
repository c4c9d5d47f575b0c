"""Flow control applied while a step runs: concurrency slots, held by lease, and their line.

An invocation of a function with ``concurrency`` limits takes one slot per limit before its
handler runs and gives them back after. A slot is one lease item in one shard of the key
(:mod:`runtime.concurrency` has the rules); without a free slot the invocation takes a place
in the key's line (one item, ranked by its run's creation time less its priority factor)
and its message waits there: a release wakes the head of the line by sending its message,
and one long backstop timer per waiting invocation makes good a lost wake-up or a slot whose
holder crashed. No invocation polls.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from runtime.app import FunctionDef
from runtime.concurrency import (
    LOOK,
    PLACE_GRACE,
    LinePlace,
    SlotLease,
    ahead_of,
    backstop,
    free_indexes,
    line_shard,
    line_shards,
    live,
    shard_sizes,
    to_wake,
    woken,
    yields,
)
from runtime.flow import Concurrency, flow_key, priority_factor
from runtime.messages import (
    as_backstop,
    is_backstop,
    poll_round,
    with_poll,
    without_backstop,
)
from runtime.orchestration.gates import OnPorts, first_message
from runtime.records import Message, MessageKind, RunState

_log = logging.getLogger("stepkit")
#: How many free slots of a shard a taker tries before it looks at another shard.
_CLAIM_TRIES = 3
#: The payload key of a woken message: the shard whose slot was just given back.
_FREED = "freed_shard"
#: Seconds past a lease's lapse at which a waiter that knows of it comes back.
_LAPSE_MARGIN = 1.0

@dataclass(frozen=True)
class Slot:
    """A concurrency slot one invocation holds: its lease, and its key's limit."""

    lease: SlotLease
    limit: int


def concurrency_gate(
    fn: FunctionDef, limit: Concurrency, event: dict[str, Any]
) -> tuple[str, str]:
    """The ``(scope, key)`` of one concurrency constraint for a run's event."""
    scope = f"concurrency:{fn.id}" if limit.scope == "fn" else f"concurrency:app:{fn.app_id}"
    return scope, flow_key(limit.key, event) or ""


@dataclass(frozen=True)
class Want:
    """One invocation asking for a slot of one concurrency key.

    Attributes:
        scope: The limit's scope.
        key: The key value.
        limit: The key's slots.
        rank: The work's rank in line (lower first).
        work: ``<run id>/<message id>``.
        again: The message that comes back when the work's turn may have come.
        lease_s: How long a slot is held at most (the Lambda timeout and a margin).
        freed: The shard a release that woke this work gave a slot back in, if any.
        redelivered: An earlier delivery of the work's message ended without finishing it
            (it failed, or its worker died, perhaps holding a slot).
    """

    scope: str
    key: str
    limit: int
    rank: float
    work: str
    again: Message
    lease_s: float
    freed: int | None = None
    redelivered: bool = False

    @property
    def line(self) -> int:
        """The shard of the key's line the work waits in."""
        return line_shard(self.work, self.limit)


class Slots(OnPorts):
    """Takes and gives back concurrency slots through the store."""

    def head(self, scope: str, key: str, limit: int, now: float) -> list[LinePlace]:
        """The live places at the head of each shard of a key's line, in line order."""
        return live([p for shard in range(line_shards(limit))
                     for p in self.store.line(scope, key, shard, LOOK)], now)

    # -- running a step --------------------------------------------------------------------

    def take_slots(
        self,
        fn: FunctionDef,
        state: RunState,
        msg: Message,
        target: str | None,
        *,
        redelivered: bool = False,
    ) -> list[Slot] | None:
        """Concurrency slots for one invocation, or ``None``: it waits in line.

        The invocation's message (or, for a START, the run's first message) is sent again
        when a release wakes it, or when its backstop timer fires. With a ``priority``
        option, a run's first step that finds only the last free slot of a limit without a
        key waits in line a moment before it takes it, so that runs delivered together start
        in rank order.
        """
        if not fn.flow.concurrency:
            return []
        run = state.run
        event = run.events[0]
        rank = run.created_at - priority_factor(fn.flow.priority, event)
        # One place in line per message (a START waits as its run's first message): a place
        # never outlives its work into the run's next message.
        first = msg.kind in (MessageKind.START, MessageKind.FLUSH)
        again = first_message(run) if first else without_backstop(msg)
        gather = first and fn.flow.priority is not None
        taken: list[Slot] = []
        for c in fn.flow.concurrency:
            scope, key = concurrency_gate(fn, c, event)
            freed = (msg.payload or {}).get(_FREED)
            want = Want(scope, key, c.limit, rank, f"{run.run_id}/{again.id}", again,
                        fn.aws.timeout_s + 30.0, freed if isinstance(freed, int) else None,
                        redelivered)
            # Only a key the whole function (or app) shares gathers: a burst delivered
            # together meets there; a keyed limit (one per customer) starts at once.
            lease = self._take(want, poll_round(msg), redelivered, gather and c.key is None,
                               backstop=is_backstop(msg))
            if lease is None:
                self.release(taken)
                return None
            taken.append(Slot(lease, c.limit))
        return taken

    def forget(self, fn: FunctionDef, state: RunState, msg: Message) -> None:
        """A message that waited in line found its work gone: give its turn on.

        Its run finished, or moved past it (a copy of the message did the work). Its place
        leaves the line and the next place is woken in its stead, so neither a run cancelled
        while it waited nor a stale place holds up the work behind it.
        """
        if not fn.flow.concurrency or poll_round(msg) == 0:
            return
        run, now = state.run, self.clock.now()
        rank = run.created_at - priority_factor(fn.flow.priority, run.events[0])
        for c in fn.flow.concurrency:
            scope, key = concurrency_gate(fn, c, run.events[0])
            want = Want(scope, key, c.limit, rank, f"{run.run_id}/{msg.id}", msg, 0.0)
            if self.store.place(scope, key, want.line, rank, want.work) is not None:
                self._leave(want)
                self._wake(to_wake(self.head(scope, key, c.limit, now), now))

    def _take(self, want: Want, poll: int, redelivered: bool,
              gather: bool, *, backstop: bool = False) -> SlotLease | None:
        """A slot of ``want``'s key, or ``None`` (the work waits in line, or was a copy).

        Each wait in line is one chain of messages: the place records the chain's round,
        and a first delivery of an older round is a duplicate copy and is dropped, so
        copies never multiply. A redelivery (its earlier delivery failed, perhaps after
        writing the place) takes the chain over instead, so a chain is never lost either.
        """
        mine = self.store.place(want.scope, want.key, want.line, want.rank, want.work)
        if mine is None and backstop and not redelivered:
            # A wake-up served this wait (its message took the slot, or its run ended):
            # going on would perform the step again beside the woken invocation.
            _log.debug("%s: backstop of a served wait dropped", want.work)
            return None
        if mine is not None and mine.round > poll:
            if not redelivered:
                _log.debug("%s: stale copy of round %d dropped", want.work, poll)
                return None
            poll = mine.round
        # A first step with a priority option leaves the last free slot to the line for a
        # moment: work delivered with it may rank before it.
        gather = gather and mine is None and poll == 0
        lease = self._claim(want, consistent=False, spare=1 if gather else 0)
        if lease is not None and mine is not None:
            self._leave_holding(want, lease)
        return lease if lease is not None else self._wait(want, mine, poll, gather)

    def _wait(self, want: Want, mine: LinePlace | None, poll: int,
              gather: bool) -> SlotLease | None:
        """Take (or keep) ``want``'s place in line and arm its backstop timer.

        Between our failed take and our place, a release may have found the line without
        us: the take is tried once more after the place is written, so no wake-up is lost.
        """
        now = self.clock.now()
        nxt = poll + 1
        delay = backstop(want.lease_s, gather, nxt)
        own = self._own_lapse(want, now) if want.redelivered else None
        if own is not None:
            delay = min(delay, own - now + _LAPSE_MARGIN)
        place = LinePlace(want.scope, want.key, want.line, want.rank, want.work,
                          with_poll(want.again, nxt, now).with_due(None).to_json(), nxt,
                          now + delay + PLACE_GRACE)
        expect = (mine.round, mine.woken) if mine is not None else (None, None)
        if not self.store.put_place(place, *expect):
            _log.debug("%s: another copy moved its place on; this one is dropped", want.work)
            return None
        if not gather:
            lease = self._claim(want, consistent=True)
            if lease is not None:
                self._leave_holding(want, lease)
                return lease
        _log.debug("%s waits for %s %r (round %d)", want.work, want.scope, want.key, nxt)
        self.queue.send([as_backstop(with_poll(want.again, nxt, now + delay))])
        return None

    def _own_lapse(self, want: Want, now: float) -> float | None:
        """When the latest lease ``want``'s own work holds lapses, if it holds one.

        An earlier delivery of the message claimed it: its worker died (the lease lapses up
        to the Lambda timeout later, and no release wakes the line), or it is a duplicate
        delivery still at work (its release wakes us first). Either way the wait need not
        outlast that lease, whatever round its backstop has doubled to. The lease is not
        taken over: a duplicate still holding it would run beside us, over the limit.
        """
        mine = [lease.expires for shard in range(len(shard_sizes(want.limit)))
                for lease in self.store.shard_leases(want.scope, want.key, shard,
                                                     consistent=True)
                if lease.work == want.work and lease.expires > now]
        return max(mine, default=None)

    def _claim(self, want: Want, *, consistent: bool, spare: int = 0) -> SlotLease | None:
        """A free slot, unless work ranked before ``want`` waits for it (then it is woken).

        Reads the head of the line and the shards in random order (the one a wake-up names
        first) until one has a free slot (a lapsed lease's slot is free: a crashed holder's
        slot frees itself). The first look may read ``consistent=False`` (half the cost;
        the claim is a conditional write); the look after taking a place in line reads
        consistently, so a slot given back meanwhile is seen. A shard with no more than
        ``spare`` free slots is passed over.
        """
        now = self.clock.now()
        ahead = ahead_of(self.head(want.scope, want.key, want.limit, now), want.rank,
                         want.work)
        sizes = shard_sizes(want.limit)
        order = random.sample(range(len(sizes)), len(sizes))
        if want.freed is not None and want.freed in order:
            order.remove(want.freed)
            order.insert(0, want.freed)
        for shard in order:
            leases = self.store.shard_leases(want.scope, want.key, shard,
                                             consistent=consistent)
            free = free_indexes(leases, sizes[shard], now)
            if not free:
                continue
            if yields(ahead, len(free)):
                self._wake(to_wake(ahead, now, len(free)))
                return None
            if len(free) <= spare:
                continue
            for index in random.sample(free, min(len(free), _CLAIM_TRIES)):
                lease = SlotLease(want.scope, want.key, shard, index, uuid.uuid4().hex,
                                  want.work, now + want.lease_s)
                if self._claim_one(Slot(lease, want.limit), now):
                    return lease
        return None

    def _leave(self, want: Want) -> None:
        """Leave the line: ``want``'s work took its slot."""
        self.store.leave_line(want.scope, want.key, want.line, want.rank, want.work)

    def _leave_holding(self, want: Want, lease: SlotLease) -> None:
        """Leave the line holding ``lease``; if that fails, give the slot back and raise.

        A place left behind would hold up the line until it lapses; the redelivery of our
        message takes a slot again and leaves the line then.
        """
        try:
            self._leave(want)
        except Exception:
            self.release([Slot(lease, want.limit)], wake=False)
            raise

    def _claim_one(self, slot: Slot, now: float) -> bool:
        """Claim one slot; a write that reported failure may have landed: give it back."""
        try:
            return self.store.claim_slot(slot.lease, now)
        except Exception:
            self.release([slot], wake=False)
            raise

    def _wake(self, places: Sequence[LinePlace], freed: int | None = None) -> None:
        """Send each place's message now, once: the place is marked woken first.

        ``freed`` (the shard a release gave its slot back in) is what the woken
        invocation reads first.
        """
        now = self.clock.now()
        for place in places:
            if self.store.put_place(woken(place, now), place.round, place.woken):
                msg = Message.from_json(place.message)
                if freed is not None:
                    msg = replace(msg, payload={**(msg.payload or {}), _FREED: freed})
                self.queue.send([msg])

    def release(self, slots: Sequence[Slot], *, wake: bool = True) -> None:
        """Give slots back and wake the head of each line.

        Best effort: a slot not given back lapses with its lease, and a waiter not woken
        comes back on its backstop timer.
        """
        for slot in slots:
            lease = slot.lease
            try:
                self.store.free_slot(lease)
                if wake:
                    now = self.clock.now()
                    head = self.head(lease.scope, lease.key, slot.limit, now)
                    self._wake(to_wake(head, now), lease.shard)
            except Exception:  # the lease lapses instead; the work itself is done
                _log.warning("concurrency slot %s %r not released; it lapses with its lease",
                             lease.scope, lease.key, exc_info=True)
