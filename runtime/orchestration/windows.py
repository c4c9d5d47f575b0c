"""Debounce and batching: events gather in a window per key until its run starts.

The window is one gate per key; the pure rules (fold an event in, when it is due, what a
flush leaves) are :mod:`runtime.flow`'s. The run is created in the same transaction that
closes the window, so an event is in exactly one run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from runtime.app import FunctionDef
from runtime.durations import format_instant
from runtime.errors import GateMovedError
from runtime.expressions import Expression
from runtime.flow import (
    MAX_BATCH_BYTES,
    event_bytes,
    flow_key,
    flushed,
    flushed_run,
    fold_event,
    window_expiry,
)
from runtime.messages import FlushPayload
from runtime.orchestration.gates import GateContentionError, GateIO
from runtime.orchestration.ids import new_run_id
from runtime.orchestration.protocols import Store
from runtime.records import (
    GateWrite,
    Message,
    MessageKind,
)
from runtime.steps.base import DUE_SLACK

_TRIES = 32
T = TypeVar("T")
_log = logging.getLogger("stepkit")


def window_scope(fn: FunctionDef) -> str:
    """The gate scope of ``fn``'s debounce or batch windows."""
    return f"{'debounce' if fn.flow.debounce else 'batch'}:{fn.id}"


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
