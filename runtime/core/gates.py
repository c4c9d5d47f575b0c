"""Flow control applied: the gates a run passes to start, and the slots a step holds to run.

The decisions are :mod:`runtime.flow`'s; this module reads gates, asks for a decision and
writes the outcome conditionally (``Store.put_gate``, or with the run itself in
``Store.create_run``), reading again when another worker got there first. Why that holds
under duplicate delivery, reordering and crashes is in ARCHITECTURE.md ("Flow control").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from runtime.app import FunctionDef
from runtime.core.protocols import Clock, Queue, Store
from runtime.errors import GateMovedError, StepkitError
from runtime.flow import (
    IDEMPOTENCY_SECONDS,
    SlotDecision,
    acquire_slot,
    flow_key,
    gcra,
    holds,
    poll_delay,
    priority_factor,
    release_slot,
    slot_expiry,
)
from runtime.records import (
    ErrorInfo,
    GateWrite,
    Message,
    MessageKind,
    RunRecord,
    RunState,
    RunStatus,
    Waiter,
)

_TRIES = 32
#: A singleton gate outlives any run it can name (runs last at most a year).
_SINGLETON_SECONDS = 400 * 86400
_log = logging.getLogger("stepkit")


class GateContentionError(StepkitError):
    """A gate kept changing under us; raised so that the message is redelivered."""


@dataclass(frozen=True)
class Slot:
    """A concurrency slot one invocation holds: its gate and its lease token."""

    scope: str
    key: str
    token: str


def first_message(run: RunRecord, due: float | None = None) -> Message:
    """The message that runs a run's first step when its START cannot (held or queued)."""
    return Message(
        MessageKind.CONTINUE, run.function_id, run.run_id, id=f"first-{run.run_id}",
        version=0, due=due,
    )


class GateIO(Protocol):
    """What flow control uses of its orchestrator (read on each use: tests wrap them)."""

    store: Store
    queue: Queue
    clock: Clock

    def cancel(self, run_id: str, reason: str) -> bool:
        """Cancel a running run (idempotent)."""
        ...


class FlowGates:
    """Applies a function's flow control through the store.

    Args:
        io: The orchestrator: its store, queue, clock and ``cancel``.
    """

    def __init__(self, io: GateIO) -> None:
        self.io = io

    @property
    def store(self) -> Store:
        """Where gates and runs live."""
        return self.io.store

    @property
    def queue(self) -> Queue:
        """Where work that must wait for a slot is re-sent."""
        return self.io.queue

    @property
    def clock(self) -> Clock:
        """The time source."""
        return self.io.clock

    def cancel(self, run_id: str, reason: str) -> None:
        """Cancel a run (singleton ``cancel`` mode)."""
        self.io.cancel(run_id, reason)

    # -- starting a run --------------------------------------------------------------------

    def create(
        self, fn: FunctionDef, run: RunRecord, waiters: Sequence[Waiter]
    ) -> RunRecord | None:
        """Create ``run`` through ``fn``'s start gates; the record created, or ``None``.

        The run may be created Skipped (idempotency, rate limit, singleton ``skip``) or held
        (throttle: its first step is queued for later). Every gate write lands in the same
        transaction as the run, so a crash leaves both or neither; a gate that moved since
        it was read is read again.

        Raises:
            GateContentionError: The gates kept moving (the message is redelivered).
        """
        if not fn.flow.gates_starts:
            return run if self.store.create_run(run, waiters) else None
        for _ in range(_TRIES):
            planned, writes = self._plan(fn, run)
            try:
                if planned.status is RunStatus.SKIPPED:
                    return planned if self.store.create_run(planned, ()) else None
                return planned if self.store.create_run(planned, waiters, writes) else None
            except GateMovedError:
                continue
        raise GateContentionError(f"run {run.run_id}: flow-control gates kept moving")

    def _plan(self, fn: FunctionDef, run: RunRecord) -> tuple[RunRecord, list[GateWrite]]:
        """The run as flow control lets it start, and the gate writes that go with it."""
        flow, event, now = fn.flow, run.events[0], self.clock.now()
        writes: list[GateWrite] = []
        if flow.idempotency is not None:
            key = flow_key(flow.idempotency, event)
            if key:  # an event without the key is not deduplicated
                scope = f"idempotency:{fn.id}"
                gate = self.store.gate(scope, key)
                holder = (gate.state or {}).get("run_id")
                if holder and holder != run.run_id:
                    return _skipped(run, now, f"idempotency key {key!r} already started run "
                                    f"{holder}"), []
                writes.append(GateWrite(scope, key, {"run_id": run.run_id}, gate.version,
                                        now + IDEMPOTENCY_SECONDS))
        if flow.rate_limit is not None:
            rl = flow.rate_limit
            key = flow_key(rl.key, event) or ""
            scope = f"rate_limit:{fn.id}"
            gate = self.store.gate(scope, key)
            adm = gcra((gate.state or {}).get("tat"), now, period=rl.period.total_seconds(),
                       limit=rl.limit)
            if adm.at > now + 1e-6:
                where = f" for key {key!r}" if rl.key else ""
                return _skipped(run, now, f"rate limit of {rl.limit} per {rl.period}{where} "
                                "reached"), []
            writes.append(GateWrite(scope, key, {"tat": adm.tat}, gate.version, adm.tat))
        if flow.singleton is not None:
            single = flow.singleton
            key = flow_key(single.key, event) or ""
            scope = f"singleton:{fn.id}"
            gate = self.store.gate(scope, key)
            holder = (gate.state or {}).get("run_id")
            if holder and holder != run.run_id:
                other = self.store.load(holder)
                if other is not None and not other.run.status.finished:
                    where = f" for key {key!r}" if single.key else ""
                    if single.mode == "skip":
                        return _skipped(run, now, f"singleton: run {holder} is running{where}"), []
                    self.cancel(holder, f"replaced by run {run.run_id} (singleton{where})")
            writes.append(GateWrite(scope, key, {"run_id": run.run_id}, gate.version,
                                    now + _SINGLETON_SECONDS))
        if flow.throttle is not None:
            th = flow.throttle
            key = flow_key(th.key, event) or ""
            scope = f"throttle:{fn.id}"
            gate = self.store.gate(scope, key)
            adm = gcra((gate.state or {}).get("tat"), now, period=th.period.total_seconds(),
                       limit=th.limit, burst=th.burst)
            writes.append(GateWrite(scope, key, {"tat": adm.tat}, gate.version, adm.tat))
            if adm.at > now + 1e-6:
                run = replace(run, held_by="throttle", held_until=adm.at,
                              outbox=(*run.outbox, first_message(run, adm.at)))
        return run, writes

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
        again = first_message(run) if msg.kind is MessageKind.START else msg
        work = f"{run.run_id}/{again.id}"
        lease_s = fn.aws.timeout_s + 30.0
        taken: list[Slot] = []
        for c in fn.flow.concurrency:
            scope = f"concurrency:{fn.id}" if c.scope == "fn" else f"concurrency:app:{fn.app_id}"
            key = flow_key(c.key, event) or ""
            slot = Slot(scope, key, uuid.uuid4().hex)
            poll = int((msg.payload or {}).get("poll") or 0)
            decision = self._acquire(slot, work, c.limit, lease_s, rank, poll, redelivered)
            if not decision.acquired:
                self.release(taken)
                if decision.stale:  # a copy of a poll already answered: its chain goes on
                    return None
                payload = {**(again.payload or {}), "poll": decision.poll}
                due = now + poll_delay(decision.position, c.limit)
                self.queue.send([replace(again, payload=payload, due=due)])
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
        for _ in range(_TRIES):
            gate = self.store.gate(slot.scope, slot.key)
            now = self.clock.now()
            decision = acquire_slot(gate.state, work_id=work, token=slot.token, now=now,
                                    limit=limit, lease_s=lease_s, rank=rank, poll=poll,
                                    redelivered=redelivered)
            if decision.stale:
                return decision
            write = GateWrite(slot.scope, slot.key, decision.state, gate.version,
                              slot_expiry(decision.state))
            try:
                written = self.store.put_gate(write)
            except Exception:
                if decision.acquired:  # it may have landed: do not leave the slot to its lease
                    self.release([slot])
                raise
            if written:
                return decision
        raise GateContentionError(f"concurrency gate {slot.scope} {slot.key!r} kept moving")

    def release(self, slots: Sequence[Slot]) -> None:
        """Give slots back (best effort: a slot not given back lapses with its lease)."""
        for slot in slots:
            try:
                self._release(slot)
            except Exception:  # the lease lapses instead; the work itself is done
                _log.warning("concurrency slot %s %r not released; it lapses with its lease",
                             slot.scope, slot.key, exc_info=True)

    def _release(self, slot: Slot) -> None:
        for _ in range(_TRIES):
            gate = self.store.gate(slot.scope, slot.key)
            now = self.clock.now()
            if not holds(gate.state, slot.token, now):
                return
            state = release_slot(gate.state, token=slot.token, now=now)
            if self.store.put_gate(GateWrite(slot.scope, slot.key, state, gate.version,
                                             slot_expiry(state))):
                return
        raise GateContentionError(f"concurrency gate {slot.scope} {slot.key!r} kept moving")


def _skipped(run: RunRecord, now: float, reason: str) -> RunRecord:
    """``run`` recorded as Skipped: it starts nothing, and the listing says why."""
    return replace(
        run, status=RunStatus.SKIPPED, ended_at=now, outbox=(), deadline=None,
        error=ErrorInfo("Skipped", reason, retriable=False),
    )
