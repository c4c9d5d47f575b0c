"""Debounce and batching: events gather in a window per key until its run starts.

A batch window is a small header, a seat per event and a membership per event id
(:class:`~runtime.orchestration.protocols.WindowStore`): an event joins with writes of about
its own size, whatever the window holds. An event takes a seat with a conditional counter on
the header, then fills the seat and records its membership in one transaction (a copy finds
its id a member and learns the run). Closing the window stops the counter; every seat below
it is then filled or tombstoned, once, so the run's events are fixed and any worker that
finishes the close (the closer, a redelivery, the timer, the next window's opener) creates
the same run under the same id: each event is in exactly one run.

Debounce windows, and batch windows opened before that layout (drained once at deploy), are
one gate per key; the pure rules (fold an event in, when it is due, what a flush leaves) are
:mod:`runtime.flow`'s, and their run is created in the transaction that clears the gate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from runtime.app import FunctionDef
from runtime.durations import format_instant
from runtime.errors import GateMovedError
from runtime.expressions import Expression
from runtime.flow import (
    MAX_BATCH_BYTES,
    SEAT_SECONDS,
    Window,
    bytes_full,
    empty_seats,
    event_bytes,
    flow_key,
    flushed,
    flushed_run,
    fold_event,
    member_expiry,
    opened_window,
    seats_full,
    settled_cap,
    window_events,
    window_expiry,
)
from runtime.messages import FlushPayload
from runtime.orchestration.gates import GateContentionError, GateIO
from runtime.orchestration.ids import new_run_id
from runtime.orchestration.protocols import Store
from runtime.records import GateWrite, Message, MessageKind
from runtime.steps.base import DUE_SLACK

_TRIES = 32
#: How a batch window's timer is told from a gate-layout window's (``flush-``) by its id.
WINDOW_TIMER = "window-"
#: How long a window's settling waits for joins still in flight before tombstoning their seats.
SETTLE_PAUSE = 0.05
T = TypeVar("T")
_log = logging.getLogger("stepkit")


def window_scope(fn: FunctionDef) -> str:
    """The gate scope of ``fn``'s debounce or batch windows."""
    return f"{'debounce' if fn.flow.debounce else 'batch'}:{fn.id}"


class WindowStarter(Protocol):
    """Creates and begins the run of a closed window (the starter's ``start_window``)."""

    def __call__(self, fn: FunctionDef, run_id: str, events: Sequence[dict[str, Any]],
                 clear: GateWrite | None = None) -> bool:
        """Create the run (with ``clear`` in its transaction, if given), then begin it.

        Returns:
            Whether it was created (``False``: it exists already; nothing written).

        Raises:
            GateMovedError: ``clear``'s gate changed since it was read.
        """
        ...


class Windows:
    """Debounce and batching: events gather in a window per key until its run starts.

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
            return False  # too large to keep in a window: it starts its own run
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
        if fn.flow.batch is None:
            return self._gate_fold(fn, event, redelivered)
        return self._join(fn, event, redelivered)

    def due(self, fn: FunctionDef, msg: Message, redelivered: bool) -> bool:
        """A window's timer fired: start its run if the window is quiet, else re-arm.

        Returns:
            Whether the window had already closed (a redelivery should then resume its run).

        Raises:
            GateContentionError: The window kept changing under us.
        """
        if not (msg.id or "").startswith(WINDOW_TIMER):
            return self._gate_due(fn, msg, redelivered)
        flush = FlushPayload.of(msg)
        scope, key, store = flush.scope, flush.key, self.io.store
        for _ in range(_TRIES):
            window = store.window(scope, key)
            if window.run_id != msg.run_id:
                return True  # a later window opened: this one's run was started first
            if window.closed:
                return window.started or not self._start(fn, scope, key, window)
            if window.round > flush.round and not redelivered:
                return False  # a copy of an older round of this timer: the newer goes on
            if window.due > self.io.clock.now() + DUE_SLACK:  # the timer came early
                later = replace(window, round=window.round + 1)
                if store.mark_window(scope, key, msg.run_id, round=later.round,
                                     expect_round=window.round):
                    self._arm(fn, scope, key, later)
                    return False
                continue
            return not self._close(fn, scope, key, msg.run_id)
        raise GateContentionError(f"{scope} {key!r}: the window kept changing")

    # -- batch windows: header, seats, members ---------------------------------------------

    def _join(self, fn: FunctionDef, event: dict[str, Any], redelivered: bool) -> str | None:
        """Seat ``event`` in its key's open batch window (opening or closing windows)."""
        batch = fn.flow.batch
        assert batch is not None
        scope, key = window_scope(fn), flow_key(batch.key, event) or ""
        store, size = self.io.store, event_bytes(event)
        if redelivered:  # our earlier delivery may have joined, then crashed
            ran = store.window_member(scope, event["id"])
            if ran is not None:
                return self._joined_before(fn, scope, key, ran)
        checked = redelivered  # whether the membership was read (see _member_of)
        for _ in range(_TRIES):
            window = store.window(scope, key)
            now = self.io.clock.now()
            if window.version == 0 and self._gate_window_open(scope, key, now):
                return self._gate_fold(fn, event, redelivered)  # drained by the gate layout
            run_id = window.run_id
            if run_id is None or not window.open:
                if run_id is not None and not window.started:
                    self._start(fn, scope, key, window)  # a crash cut the last start short
                    continue
                if not checked:
                    checked = True
                    if store.window_member(scope, event["id"]) is not None:
                        return None  # a copy of a member: it opens no empty window
                opened = opened_window(new_run_id(now), now, batch, window.version)
                if store.open_window(scope, key, opened):
                    self._arm(fn, scope, key, opened)
                continue
            if seats_full(window):
                self._settle(fn, scope, key, window)
                continue
            if bytes_full(window, size):
                ran, checked = self._member_of(scope, event, window), True
                if ran is not None:  # a copy must not close the window: finish as a copy
                    return self._joined_before(fn, scope, key, ran) if redelivered else None
                self._close(fn, scope, key, run_id)
                continue
            seat = store.take_seat(scope, key, run_id, size, MAX_BATCH_BYTES)
            if seat is None:
                continue  # closed, full or moved on since read
            joined = store.join_window(scope, run_id, seat, event,
                                       member_until=member_expiry(now),
                                       seat_until=now + SEAT_SECONDS)
            if joined.lost:
                continue  # our seat was given up (or the write conflicted): take another
            if joined.duplicate:
                if not redelivered or joined.run_id is None:
                    return None  # a copy: the event is in hand
                return self._joined_before(fn, scope, key, joined.run_id)
            if seat >= window.cap:
                self._settle(fn, scope, key, store.window(scope, key))  # the last seat: start
            elif redelivered:
                self._arm(fn, scope, key, window)  # a crash may have lost the timer
            return None
        raise GateContentionError(f"{scope} {key!r}: the window kept changing")

    def _member_of(self, scope: str, event: dict[str, Any], window: Window) -> str | None:
        """The run whose window ``event`` joined, for an event too large for ``window``.

        SQS delivers a message twice at times, both copies at once: a copy of a large event
        does not fit beside the original and would close its window early (the batch
        starting before its timeout, smaller than it should be). The original's join may be
        a few milliseconds behind its seat, so a copy that is not a member yet looks again
        after a pause, as settling does. Two reads at most, only where a window closes for
        its bytes: once per window, not per event.
        """
        store = self.io.store
        ran = store.window_member(scope, event["id"])
        if ran is not None or window.count == 0:  # no seat taken: no join in flight
            return ran
        time.sleep(SETTLE_PAUSE)
        return store.window_member(scope, event["id"])

    def _joined_before(self, fn: FunctionDef, scope: str, key: str, run_id: str) -> str | None:
        """A redelivered event is a member of ``run_id``'s window: finish what is left.

        Returns:
            The run to resume, or ``None`` when its window is still open (or was started now).
        """
        window = self.io.store.window(scope, key)
        if window.run_id == run_id and window.open:
            self._arm(fn, scope, key, window)  # the timer may be lost
            self._settle(fn, scope, key, window)  # and, if we took its last seat, the start
            return None
        if window.run_id == run_id and not window.started and self._start(fn, scope, key,
                                                                          window):
            return None
        return run_id  # started (by us before a crash, or by another worker): resume it

    def _settle(self, fn: FunctionDef, scope: str, key: str, window: Window) -> None:
        """Every seat under the cap is taken: start the window if ``max_size`` are filled.

        Seats still empty are tombstoned (their events, in flight or crashed, take seats
        again) and the cap rises by as many, so a window full by count holds exactly
        ``max_size`` events, however many copies and failed joins took seats.
        """
        run_id, store, batch = window.run_id, self.io.store, fn.flow.batch
        if run_id is None or not window.open or not seats_full(window) or batch is None:
            return
        until = self.io.clock.now() + SEAT_SECONDS
        for attempt in range(_TRIES):
            seats = store.window_seats(scope, run_id, window.count)
            if attempt == 0 and empty_seats(seats, window.count):
                # Joins a few milliseconds behind ours are most of them: let them land
                # rather than tombstone them into another round of seats.
                time.sleep(SETTLE_PAUSE)
                seats = store.window_seats(scope, run_id, window.count)
            empty = empty_seats(seats, window.count)
            if not all(store.kill_seat(scope, run_id, n, until) for n in empty):
                continue  # filled meanwhile: read the seats again
            seats.update((n, {}) for n in empty)
            cap = settled_cap(seats, window.count, batch)
            if cap > window.cap:
                store.mark_window(scope, key, run_id, cap=cap)
            else:
                self._close(fn, scope, key, run_id)
            return
        raise GateContentionError(f"{scope} {key!r}: the seats of {run_id} kept changing")

    def _close(self, fn: FunctionDef, scope: str, key: str, run_id: str) -> bool:
        """Close window ``run_id`` and start its run; whether we created the run."""
        window = self.io.store.close_window(scope, key, run_id)
        if window is None:  # closed by another worker, who may have crashed before starting
            window = self.io.store.window(scope, key)
            if window.run_id != run_id or not window.closed or window.started:
                return False
        return self._start(fn, scope, key, window)

    def _start(self, fn: FunctionDef, scope: str, key: str, window: Window) -> bool:
        """Settle a closed window's seats (fill or tombstone) and create its run.

        Each seat below the closed counter is decided once (its event's transaction or the
        tombstone lands first), so every worker that gets here creates the same run.

        Returns:
            Whether we created the run (``False``: it existed, or every seat was empty).
        """
        store, run_id = self.io.store, window.run_id
        assert run_id is not None and window.closed
        until = self.io.clock.now() + SEAT_SECONDS
        for _ in range(_TRIES):
            seats = store.window_seats(scope, run_id, window.count)
            if not all(store.kill_seat(scope, run_id, n, until)
                       for n in empty_seats(seats, window.count)):
                continue  # a seat was filled (or a write conflicted): read the seats again
            events = window_events(seats, window.count)
            created = bool(events) and self.start(fn, run_id, events)
            store.mark_window(scope, key, run_id, started=True)
            return created
        raise GateContentionError(f"{scope} {key!r}: the seats of {run_id} kept changing")

    def _arm(self, fn: FunctionDef, scope: str, key: str, window: Window) -> None:
        """Send the batch window's timer for its current round."""
        self.io.queue.send([Message(
            MessageKind.FLUSH, fn.id, str(window.run_id),
            id=f"{WINDOW_TIMER}{window.run_id}-{window.round}", due=window.due,
            payload=FlushPayload(scope, key, window.round).to_json(),
        )])

    def _gate_window_open(self, scope: str, key: str, now: float) -> bool:
        """Whether a gate-layout batch window is open here (it is drained the old way).

        With none open, the ids it flushed lately become memberships first, so a late copy
        of one is still recognised once this key's windows are headers and seats.
        """
        state = self.io.store.gate(scope, key).state or {}
        if state.get("pending"):
            return True
        recent = [(event_id, str(v[1]), float(v[0]))
                  for event_id, v in (state.get("recent") or {}).items() if v[0] > now]
        if recent:
            self.io.store.adopt_members(scope, recent)
        return False

    # -- gate layout: debounce, and batch windows opened before headers and seats ----------

    def _gate_fold(self, fn: FunctionDef, event: dict[str, Any], redelivered: bool) -> str | None:
        """Fold ``event`` into its key's gate (a debounce window, or an old batch window)."""
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
                    self._gate_arm(fn, scope, key, gate.state or {})  # the timer may be lost
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
                    self._gate_arm(fn, scope, key, fold.state)
                return None
        raise GateContentionError(f"{scope} {key!r}: the window kept changing")

    def _gate_arm(self, fn: FunctionDef, scope: str, key: str, state: dict[str, Any]) -> None:
        """Send a gate window's timer for its current round."""
        self.io.queue.send([Message(
            MessageKind.FLUSH, fn.id, str(state["pending"]),
            id=f"flush-{state['pending']}-{state['round']}", due=float(state["due"]),
            payload=FlushPayload(scope, key, int(state["round"])).to_json(),
        )])

    def _gate_due(self, fn: FunctionDef, msg: Message, redelivered: bool) -> bool:
        """A gate window's timer fired (see :meth:`due`)."""
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
                    self._gate_arm(fn, scope, key, again)
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


def open_windows(fn: FunctionDef, store: Store, now: float) -> list[dict[str, Any]]:
    """The open debounce or batch windows of ``fn``: what waits to start, and until when.

    Batch windows are read from their headers (one bounded Query, none of their events);
    debounce windows from their gates.
    """
    flow = fn.flow
    if flow.window is None:
        return []
    scope = window_scope(fn)
    found: list[tuple[str, str, int, float]] = []
    if flow.batch is not None:
        found = [(key, str(w.run_id), w.count, w.due) for key, w in store.list_windows(scope)]
    else:
        found = [(key, str(state["pending"]), len(state.get("events") or []),
                  float(state["due"]))
                 for key, gate in store.list_gates(scope)
                 if (state := gate.state or {}).get("pending")]
    listed = []
    for key, run_id, count, due in found:
        when = format_instant(due, timespec="seconds")
        if flow.batch is not None:
            message = f"batching {count}/{flow.batch.max_size} until {when}"
        else:
            message = f"debounced until {when}"
        listed.append({"kind": "debounce" if flow.debounce else "batch", "key": key,
                       "run_id": run_id, "events": count, "until": due,
                       "message": message + (f" (key {key!r})" if flow.window.key else "")})
    return listed
