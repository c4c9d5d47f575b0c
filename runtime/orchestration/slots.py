"""Flow control applied while a step runs: concurrency slots, held by lease, and their line.

An invocation of a function with ``concurrency`` limits takes one slot per limit before its
handler runs and gives them back after; without a free slot it waits in a line ranked by its
run's creation time less its priority factor, its message re-sent to come back later. The
line and the held slots are :mod:`runtime.flow`'s pure functions over one gate per key.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from runtime.app import FunctionDef
from runtime.flow import (
    Concurrency,
    SlotDecision,
    acquire_slot,
    flow_key,
    holds,
    poll_delay,
    priority_factor,
    release_slot,
    slot_expiry,
)
from runtime.messages import poll_round, with_poll
from runtime.orchestration.gates import GateContentionError, GateIO, first_message
from runtime.orchestration.protocols import Clock, Queue, Store
from runtime.records import (
    GateWrite,
    Message,
    MessageKind,
    RunState,
)

_TRIES = 32
T = TypeVar("T")
_log = logging.getLogger("stepkit")


@dataclass(frozen=True)
class Slot:
    """A concurrency slot one invocation holds: its gate and its lease token."""

    scope: str
    key: str
    token: str


def concurrency_gate(
    fn: FunctionDef, limit: Concurrency, event: dict[str, Any]
) -> tuple[str, str]:
    """The gate ``(scope, key)`` of one concurrency constraint for a run's event."""
    scope = f"concurrency:{fn.id}" if limit.scope == "fn" else f"concurrency:app:{fn.app_id}"
    return scope, flow_key(limit.key, event) or ""


class Slots:
    """Takes and gives back concurrency slots through the store.

    Args:
        io: The orchestrator: its store, queue and clock.
    """

    def __init__(self, io: GateIO) -> None:
        self.io = io

    @property
    def store(self) -> Store:
        """Where gates and runs live."""
        return self.io.store

    @property
    def queue(self) -> Queue:
        """Where work that must wait is re-sent."""
        return self.io.queue

    @property
    def clock(self) -> Clock:
        """The time source."""
        return self.io.clock

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
        """Concurrency slots for one invocation, or ``None``: none free, ``msg`` re-sent.

        The invocation waits in a line ranked by its run's creation time less its priority
        factor; ``msg`` (or, for a START, the run's first message) comes back when its
        place may have come.

        Raises:
            GateContentionError: A gate kept moving (the message is redelivered).
        """
        if not fn.flow.concurrency:
            return []
        run, now = state.run, self.clock.now()
        event = run.events[0]
        rank = run.created_at - priority_factor(fn.flow.priority, event)
        # One place in line per message (a START waits as its run's first message): a line
        # entry never outlives its work into the run's next message.
        first = msg.kind in (MessageKind.START, MessageKind.FLUSH)
        again = first_message(run) if first else msg
        work = f"{run.run_id}/{again.id}"
        lease_s = fn.aws.timeout_s + 30.0
        taken: list[Slot] = []
        for c in fn.flow.concurrency:
            scope, key = concurrency_gate(fn, c, event)
            slot = Slot(scope, key, uuid.uuid4().hex)
            poll = poll_round(msg)
            decision = self._acquire(slot, work, c.limit, lease_s, rank, poll, redelivered)
            if not decision.acquired:
                self.release(taken)
                if decision.stale:  # a copy of a poll already answered: its chain goes on
                    _log.debug("run %s: stale poll %s round %d dropped", run.run_id, msg.id,
                               poll)
                    return None
                due = now + poll_delay(decision.position, c.limit)
                _log.debug("run %s: %s waits for %s %r (position %d, round %d)", run.run_id,
                           again.id, scope, key, decision.position, decision.poll)
                self.queue.send([with_poll(again, decision.poll, due)])
                return None
            taken.append(slot)
        return taken

    def _acquire(
        self,
        slot: Slot,
        work: str,
        limit: int,
        lease_s: float,
        rank: float,
        poll: int,
        redelivered: bool,
    ) -> SlotDecision:
        """Ask for ``slot`` and record the outcome in its gate."""

        def decide(state: dict[str, Any] | None, now: float) -> tuple[Any, SlotDecision]:
            d = acquire_slot(state, work_id=work, token=slot.token, now=now, limit=limit,
                             lease_s=lease_s, rank=rank, poll=poll, redelivered=redelivered)
            return (None if d.stale else d.state), d

        try:
            return self._update(slot.scope, slot.key, decide)
        except Exception:
            # A write that reported failure may have landed: give back what it may have
            # taken rather than leave the slot to its lease (a no-op if it did not land).
            self.release([slot])
            raise

    def release(self, slots: Sequence[Slot]) -> None:
        """Give slots back (best effort: a slot not given back lapses with its lease)."""
        for slot in slots:

            def give_back(
                state: dict[str, Any] | None, now: float, token: str = slot.token
            ) -> tuple[dict[str, Any] | None, None]:
                held = holds(state, token, now)
                return (release_slot(state, token=token, now=now) if held else None), None

            try:
                self._update(slot.scope, slot.key, give_back)
            except Exception:  # the lease lapses instead; the work itself is done
                _log.warning("concurrency slot %s %r not released; it lapses with its lease",
                             slot.scope, slot.key, exc_info=True)

    def _update(
        self,
        scope: str,
        key: str,
        decide: Callable[[dict[str, Any] | None, float], tuple[dict[str, Any] | None, T]],
    ) -> T:
        """Read a concurrency gate, ``decide`` its new state and write it on condition.

        Read and decide again when another writer got there first; ``decide`` returns
        ``(None, result)`` to write nothing.

        Raises:
            GateContentionError: The gate kept moving (the message is redelivered).
        """
        for _ in range(_TRIES):
            gate = self.store.gate(scope, key)
            state, result = decide(gate.state, self.clock.now())
            if state is None:
                return result
            if self.store.put_gate(GateWrite(scope, key, state, gate.version,
                                             slot_expiry(state))):
                return result
        raise GateContentionError(f"concurrency gate {scope} {key!r} kept moving")


