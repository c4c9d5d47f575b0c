"""Flow control applied: the gates a run passes to start, and the slots a step holds to run.

The decisions are :mod:`runtime.flow`'s; this module reads gates, asks for a decision and
writes the outcome conditionally (``Store.put_gate``, or with the run itself in
``Store.create_run``), reading again when another worker got there first. Why that holds
under duplicate delivery, reordering and crashes is in ARCHITECTURE.md ("Flow control").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from runtime.app import FunctionDef
from runtime.durations import format_instant
from runtime.errors import GateMovedError, StepkitError
from runtime.expressions import Expression
from runtime.flow import (
    IDEMPOTENCY_SECONDS,
    MAX_BATCH_BYTES,
    Admission,
    Concurrency,
    SlotDecision,
    acquire_slot,
    event_bytes,
    flow_key,
    flushed,
    flushed_run,
    fold_event,
    gcra,
    holds,
    poll_delay,
    priority_factor,
    release_slot,
    slot_expiry,
    waiting_line,
    window_expiry,
)
from runtime.messages import FlushPayload, poll_round, with_poll
from runtime.orchestration.ids import new_run_id
from runtime.orchestration.protocols import Clock, Queue, Store
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
from runtime.steps.base import DUE_SLACK

_TRIES = 32
T = TypeVar("T")
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


def concurrency_gate(
    fn: FunctionDef, limit: Concurrency, event: dict[str, Any]
) -> tuple[str, str]:
    """The gate ``(scope, key)`` of one concurrency constraint for a run's event."""
    scope = f"concurrency:{fn.id}" if limit.scope == "fn" else f"concurrency:app:{fn.app_id}"
    return scope, flow_key(limit.key, event) or ""


def window_scope(fn: FunctionDef) -> str:
    """The gate scope of ``fn``'s debounce or batch windows."""
    return f"{'debounce' if fn.flow.debounce else 'batch'}:{fn.id}"


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

    @property
    def clock(self) -> Clock:
        """The time source."""
        ...

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
        """The run as flow control lets it start, and the gate writes that go with it.

        The rules apply in order (idempotency, rate limit, singleton, throttle); the first
        that skips the run decides, and a skipped run writes no gate.
        """
        writes: list[GateWrite] = []
        for rule in (self._idempotency, self._rate_limit, self._singleton, self._throttle):
            run, write = rule(fn, run, self.clock.now())
            if run.status is RunStatus.SKIPPED:
                return run, []
            if write is not None:
                writes.append(write)
        return run, writes

    def _idempotency(
        self, fn: FunctionDef, run: RunRecord, now: float
    ) -> tuple[RunRecord, GateWrite | None]:
        """At most one run per key per 24 h: a later one is skipped."""
        key = flow_key(fn.flow.idempotency, run.events[0]) if fn.flow.idempotency else None
        if not key:  # no option, or an event without the key: not deduplicated
            return run, None
        scope = f"idempotency:{fn.id}"
        gate = self.store.gate(scope, key)
        holder = (gate.state or {}).get("run_id")
        if holder and holder != run.run_id:
            return _skipped(run, now, f"idempotency key {key!r} already started run {holder}"), None
        return run, GateWrite(scope, key, {"run_id": run.run_id}, gate.version,
                              now + IDEMPOTENCY_SECONDS)

    def _gcra(
        self, scope: str, key: str, now: float, period: float, limit: int, burst: int = 0
    ) -> tuple[Admission, GateWrite]:
        """GCRA on the gate ``(scope, key)``: the admission, and the write that records it."""
        gate = self.store.gate(scope, key)
        adm = gcra((gate.state or {}).get("tat"), now, period=period, limit=limit, burst=burst)
        return adm, GateWrite(scope, key, {"tat": adm.tat}, gate.version, adm.tat)

    def _rate_limit(
        self, fn: FunctionDef, run: RunRecord, now: float
    ) -> tuple[RunRecord, GateWrite | None]:
        """At most ``limit`` starts per period per key: the rest are skipped."""
        rl = fn.flow.rate_limit
        if rl is None:
            return run, None
        key = flow_key(rl.key, run.events[0]) or ""
        adm, write = self._gcra(f"rate_limit:{fn.id}", key, now, rl.period.total_seconds(),
                                rl.limit)
        if adm.at > now + 1e-6:
            where = f" for key {key!r}" if rl.key else ""
            return _skipped(run, now, f"rate limit of {rl.limit} per {rl.period}{where} "
                            "reached"), None
        return run, write

    def _singleton(
        self, fn: FunctionDef, run: RunRecord, now: float
    ) -> tuple[RunRecord, GateWrite | None]:
        """One running run per key: skip the new one, or cancel the old one."""
        single = fn.flow.singleton
        if single is None:
            return run, None
        key = flow_key(single.key, run.events[0]) or ""
        scope = f"singleton:{fn.id}"
        gate = self.store.gate(scope, key)
        holder = (gate.state or {}).get("run_id")
        if holder and holder != run.run_id:
            other = self.store.load(holder)
            if other is not None and not other.run.status.finished:
                where = f" for key {key!r}" if single.key else ""
                if single.mode == "skip":
                    return _skipped(run, now, f"singleton: run {holder} is running{where}"), None
                self.cancel(holder, f"replaced by run {run.run_id} (singleton{where})")
        return run, GateWrite(scope, key, {"run_id": run.run_id}, gate.version,
                              now + _SINGLETON_SECONDS)

    def _throttle(
        self, fn: FunctionDef, run: RunRecord, now: float
    ) -> tuple[RunRecord, GateWrite | None]:
        """``limit`` starts per period per key: a later start is held until its turn."""
        th = fn.flow.throttle
        if th is None:
            return run, None
        key = flow_key(th.key, run.events[0]) or ""
        adm, write = self._gcra(f"throttle:{fn.id}", key, now, th.period.total_seconds(),
                                th.limit, th.burst)
        if adm.at > now + 1e-6:
            run = replace(run, held_by="throttle", held_until=adm.at,
                          outbox=(*run.outbox, first_message(run, adm.at)))
        return run, write

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


class WindowStarter(Protocol):
    """Creates and begins the run of a closed window (the orchestrator's ``_start_window``)."""

    def __call__(
        self, fn: FunctionDef, run_id: str, events: Sequence[dict[str, Any]], clear: GateWrite
    ) -> None:
        """Create the run with ``clear`` in its transaction, then begin it.

        Raises:
            GateMovedError: The window changed since it was read.
        """
        ...


class Windows:
    """Debounce and batching: events gather in a gate per key until its run starts.

    The gate holds the open window (the run id it will start, its events, when it is due and
    the round of its timer chain) and the ids of events recently flushed with the run they
    went to. Every change is a conditional write; the run is created in the same
    transaction that closes the window, so an event is in exactly one run.

    Args:
        io: The orchestrator: its store, queue and clock.
        start: Creates a closed window's run (and begins it).
    """

    def __init__(self, io: GateIO, start: WindowStarter) -> None:
        self.io = io
        self.start = start


    def gathers(self, fn: FunctionDef, event: dict[str, Any]) -> bool:
        """Whether ``event`` waits in a window (a batch's ``if`` may send it straight on)."""
        batch = fn.flow.batch
        if event_bytes(event) > MAX_BATCH_BYTES:
            return False  # too large to keep in a window's gate: it starts its own run
        if fn.flow.debounce is not None:
            return True
        if batch is None:
            return False
        return batch.if_ is None or _condition(batch.if_).matches_vars({"event": event})

    def fold(self, fn: FunctionDef, event: dict[str, Any], redelivered: bool) -> str | None:
        """Add ``event`` (from its START message) to its window.

        Returns:
            A run to resume: on a redelivery, the run the event already went to (its
            earlier delivery may have crashed before beginning it).

        Raises:
            GateContentionError: The window kept changing under us.
        """
        flow = fn.flow
        window = flow.window
        assert window is not None
        scope, key = window_scope(fn), flow_key(window.key, event) or ""
        for _ in range(_TRIES):
            gate = self.io.store.gate(scope, key)
            now = self.io.clock.now()
            pending = new_run_id(now)  # kept only if this event opens the window
            fold = fold_event(gate.state, event, now=now, pending_id=pending,
                              debounce=flow.debounce, batch=flow.batch)
            if fold.duplicate:
                if not redelivered:
                    return None  # a copy: the event is in hand
                ran = flushed_run(gate.state, event["id"], now)
                if ran is None and (gate.state or {}).get("pending"):
                    self._arm(fn, scope, key, gate.state or {})  # the timer may be lost
                return ran
            if fold.flush:
                clear = GateWrite(scope, key, flushed(fold.state, now), gate.version,
                                  window_expiry(flushed(fold.state, now)))
                try:
                    self.start(fn, str(fold.state["pending"]), fold.state["events"], clear)
                except GateMovedError:
                    continue
                if fold.carry:
                    continue  # the event did not fit: it opens the next window
                return None
            if self.io.store.put_gate(GateWrite(scope, key, fold.state, gate.version, None)):
                if fold.opened or redelivered:  # (a redelivery may have lost the timer)
                    self._arm(fn, scope, key, fold.state)
                return None
        raise GateContentionError(f"{scope} {key!r}: the window kept changing")

    def _arm(self, fn: FunctionDef, scope: str, key: str, state: dict[str, Any]) -> None:
        """Send the window's timer for its current round."""
        self.io.queue.send([Message(
            MessageKind.FLUSH, fn.id, str(state["pending"]),
            id=f"flush-{state['pending']}-{state['round']}", due=float(state["due"]),
            payload=FlushPayload(scope, key, int(state["round"])).to_json(),
        )])

    def due(self, fn: FunctionDef, msg: Message, redelivered: bool) -> bool:
        """A window's timer fired: start its run if the window is quiet, else re-arm.

        Returns:
            Whether the window had already closed (a redelivery should then resume its run).

        Raises:
            GateContentionError: The window kept changing under us.
        """
        flush = FlushPayload.of(msg)
        scope, key, rnd = flush.scope, flush.key, flush.round
        for _ in range(_TRIES):
            gate = self.io.store.gate(scope, key)
            state = gate.state or {}
            if state.get("pending") != msg.run_id:
                return True
            if int(state["round"]) > rnd and not redelivered:
                return False  # a copy of an older round of this timer: the newer goes on
            now = self.io.clock.now()
            if float(state["due"]) > now + DUE_SLACK:  # a new event moved the end: wait again
                again = {**state, "round": int(state["round"]) + 1}
                if self.io.store.put_gate(GateWrite(scope, key, again, gate.version, None)):
                    self._arm(fn, scope, key, again)
                    return False
                continue
            done = flushed(state, now)
            clear = GateWrite(scope, key, done, gate.version, window_expiry(done))
            try:
                self.start(fn, msg.run_id, state["events"], clear)
            except GateMovedError:
                continue
            return False
        raise GateContentionError(f"{scope} {key!r}: the window kept changing")


@lru_cache(maxsize=256)
def _condition(source: str) -> Expression:
    return Expression.compile(source, where="batch_events if")


def _skipped(run: RunRecord, now: float, reason: str) -> RunRecord:
    """``run`` recorded as Skipped: it starts nothing, and the listing says why."""
    return replace(
        run, status=RunStatus.SKIPPED, ended_at=now, outbox=(), deadline=None,
        error=ErrorInfo("Skipped", reason, retriable=False),
    )


# -- why a run is not executing --------------------------------------------------------------


def why_waiting(
    fn: FunctionDef | None,
    run: RunRecord,
    store: Store,
    now: float,
    lines: dict[tuple[str, str], list[str]] | None = None,
) -> dict[str, Any] | None:
    """Why flow control holds ``run`` back now, for people: ``{kind, message, until}``.

    ``skipped`` (the rule that skipped it), ``throttled`` (until its turn), ``queued``
    (waiting for a concurrency slot, with how many are ahead); ``None`` when nothing holds
    it. Reads the gate of each concurrency constraint of a running run, once per listing
    when the caller passes one ``lines`` dict for all its runs.
    """
    if run.status is RunStatus.SKIPPED:
        reason = run.error.message if run.error else "skipped by flow control"
        return {"kind": "skipped", "message": reason, "until": None}
    if run.status.finished:
        return None
    if run.held(now) and run.held_until is not None:
        when = format_instant(run.held_until, timespec="seconds")
        return {"kind": "throttled", "message": f"throttled until {when}",
                "until": run.held_until}
    if fn is None or not fn.flow.concurrency:
        return None
    event = run.events[0] if run.events else {}
    for c in fn.flow.concurrency:
        gate = concurrency_gate(fn, c, event)
        cache = lines if lines is not None else {}
        if gate not in cache:
            cache[gate] = waiting_line(store.gate(*gate).state, now)
        line, key = cache[gate], gate[1]
        mine = [i for i, work in enumerate(line) if work.startswith(f"{run.run_id}/")]
        if mine:
            where = f" key {key!r}" if c.key else ""
            return {"kind": "queued", "until": None,
                    "message": f"queued behind concurrency limit {c.limit}{where} "
                               f"({mine[0]} ahead)"}
    return None


def open_windows(fn: FunctionDef, store: Store, now: float) -> list[dict[str, Any]]:
    """The open debounce or batch windows of ``fn``: what waits to start, and until when."""
    flow = fn.flow
    if flow.window is None:
        return []
    scope = window_scope(fn)
    found = []
    for key, gate in store.list_gates(scope):
        state = gate.state or {}
        if not state.get("pending"):
            continue
        due = float(state["due"])
        when = format_instant(due, timespec="seconds")
        count = len(state.get("events") or [])
        if flow.batch is not None:
            message = f"batching {count}/{flow.batch.max_size} until {when}"
        else:
            message = f"debounced until {when}"
        found.append({"kind": "debounce" if flow.debounce else "batch", "key": key,
                      "run_id": state["pending"], "events": count, "until": due,
                      "message": message + (f" (key {key!r})" if flow.window.key else "")})
    return found
