"""Flow control applied when a run starts: idempotency, rate limit, singleton, throttle.

The decisions are :mod:`runtime.flow`'s; this module reads the start gates, asks for a
decision and writes the outcome with the run itself (``Store.create_run``), reading again
when another worker got there first. Concurrency slots are :mod:`slots`, debounce and batch
windows :mod:`windows`. Why that holds under duplicate delivery, reordering and crashes is in
ARCHITECTURE.md ("Flow control").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

from runtime.app import FunctionDef
from runtime.errors import GateMovedError, StepkitError
from runtime.flow import (
    IDEMPOTENCY_SECONDS,
    Admission,
    flow_key,
    gcra,
)
from runtime.orchestration.protocols import Clock, Queue, Store
from runtime.records import (
    ErrorInfo,
    GateWrite,
    Message,
    MessageKind,
    RunRecord,
    RunStatus,
    Waiter,
)

_TRIES = 32
T = TypeVar("T")
#: A singleton gate outlives any run it can name (runs last at most a year).
_SINGLETON_SECONDS = 400 * 86400
_log = logging.getLogger("stepkit")


class GateContentionError(StepkitError):
    """A gate kept changing under us; raised so that the message is redelivered."""


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


class OnPorts:
    """A flow-control part: reads its orchestrator's ports on each use (tests wrap them).

    Args:
        io: The orchestrator: its store, queue, clock and ``cancel``.
    """

    def __init__(self, io: GateIO) -> None:
        self.io = io

    @property
    def store(self) -> Store:
        """Where gates, slots and runs live."""
        return self.io.store

    @property
    def queue(self) -> Queue:
        """Where work that waits, or is woken, is sent."""
        return self.io.queue

    @property
    def clock(self) -> Clock:
        """The time source."""
        return self.io.clock


class FlowGates(OnPorts):
    """Applies a function's start gates through the store."""

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

def _skipped(run: RunRecord, now: float, reason: str) -> RunRecord:
    """``run`` recorded as Skipped: it starts nothing, and the listing says why."""
    return replace(
        run, status=RunStatus.SKIPPED, ended_at=now, outbox=(), deadline=None,
        error=ErrorInfo("Skipped", reason, retriable=False),
    )
