"""Starting runs: a START message becomes a run (through flow control), then its first step.

One run id per function and event (or per cron fire, rerun, invoke), so a copy of a START
creates nothing; a redelivered START of a run that exists finishes what a crash may have
cut short. Debounce and batch windows gather events first (:class:`Windows`) and start
their run when the window closes (a FLUSH, or the event that fills it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from runtime.app import FunctionDef
from runtime.errors import GateMovedError
from runtime.expressions import ExpressionError
from runtime.messages import StartPayload, as_returned, is_returned
from runtime.orchestration.commits import cancel_waiters, finish_outbox
from runtime.orchestration.delivery import Delivery
from runtime.orchestration.gates import FlowGates, GateIO
from runtime.orchestration.intake import starts
from runtime.orchestration.matching import cancel_lookback
from runtime.orchestration.metrics import observe_created
from runtime.orchestration.ports import Ports
from runtime.orchestration.replaying import Replayer, late
from runtime.orchestration.windows import Windows
from runtime.records import (
    ErrorInfo,
    GateWrite,
    Message,
    MessageKind,
    ParentRef,
    RerunOf,
    RunRecord,
    RunState,
    RunStatus,
    StepRecord,
    Waiter,
)
from runtime.steps.base import timeout_id


class Starter:
    """Creates runs from START and FLUSH messages, and runs their first step."""

    def __init__(self, ports: Ports, io: GateIO, gates: FlowGates, replayer: Replayer,
                 delivery: Delivery) -> None:
        self.ports = ports
        self.gates = gates
        self.replayer = replayer
        self.delivery = delivery
        self.windows = Windows(io, self.start_window)

    def on_start(self, fn: FunctionDef, msg: Message, now: float, redelivered: bool,
                 last: bool = False) -> None:
        """START: create the run (or fold its event into a window), then run its first step."""
        start = StartPayload.of(msg)
        events = start.events
        if fn.retired and self.ports.store.load(msg.run_id) is None:
            # Draining: no new run, however asked for (an invoke sent before the deploy).
            self.ports.log.warning("run %s of %s not started: the function is retired",
                                   msg.run_id, fn.id)
            return
        if not start.direct and not starts(fn, events[0]):
            return  # filtered out (the trigger's `if`, or a system event about fn itself)
        if not start.direct and fn.flow.window is not None and self.windows.gathers(fn,
                                                                                   events[0]):
            resume = self.windows.fold(fn, events[0], redelivered)
            if resume is not None:  # our earlier delivery closed the window, then crashed
                self.resume(fn, resume, f"flush-{resume}", now, last)
            return
        run, waiters = new_run(fn, msg.run_id, events, msg.id, now, start.parent,
                               start.rerun_of)
        outbox = list(run.outbox)
        is_late = late(fn, events[0], now)
        if is_late:
            error = ErrorInfo("FunctionCancelled", f"not started within {fn.start_timeout}", False)
            run = replace(run, status=RunStatus.CANCELLED, error=error, ended_at=now)
            outbox = list(finish_outbox(run, RunStatus.CANCELLED, None, error, now))
            waiters = []
        run = replace(run, outbox=tuple(outbox))
        gated = not is_late and not start.rerun and not run.status.finished
        rerun_of = start.rerun_of
        seed = self._forked_steps(rerun_of) if rerun_of and rerun_of.step else {}
        created = (self._create_gated(fn, run, waiters) if gated
                   else self.ports.create(run, waiters, list(seed.values())))
        if created is not None:
            self.begin(fn, created, msg, now, seed)
            return
        # The run exists. A first delivery is a copy (a re-sent event, a duplicated message):
        # its run is someone else's work. A redelivery may be our own start that crashed.
        if redelivered:
            self.resume(fn, msg.run_id, msg.id, now, last, returned=is_returned(msg))

    def on_flush(self, fn: FunctionDef, msg: Message, now: float, redelivered: bool,
                 last: bool) -> None:
        """FLUSH: a window's time is up: start its run (or resume it, on a redelivery).

        A window closed before its time (full) may have been started by a worker whose own
        message then went to another window: if that worker crashed before the run's first
        step, the window's timer is what is left to run it.
        """
        if not self.windows.due(fn, msg, redelivered):
            return
        state = None if redelivered else self.ports.store.load(msg.run_id)
        if redelivered or (state is not None and state.run.version == 0
                           and not state.run.status.finished):
            self.resume(fn, msg.run_id, f"flush-{msg.run_id}", now, last)

    def _create_gated(self, fn: FunctionDef, run: RunRecord,
                      waiters: Sequence[Waiter]) -> RunRecord | None:
        """Create ``run`` through ``fn``'s flow control (it may be skipped or held)."""
        created = self.gates.create(fn, run, waiters)
        if created is not None:
            observe_created(self.ports.metrics, created)
        return created

    def _forked_steps(self, fork: RerunOf) -> dict[str, StepRecord]:
        """The records a fork starts with: the original's, recorded before the fork step."""
        original = self.ports.store.load(fork.run_id)
        if original is None:  # kept at least as long as the fork's START: a retention race
            return {}
        target = original.steps.get(str(fork.step))
        if target is None:
            return {}
        # Before it: started earlier, or at the same instant but recorded earlier (stores
        # keep records in the order they were first written; a fake clock stands still).
        order = {key: i for i, key in enumerate(original.steps)}

        def rank(rec: StepRecord) -> tuple[float, int]:
            return (rec.started_at or 0.0, order[rec.key])

        return {rec.key: rec for rec in original.steps.values()
                if rec.status.final and rank(rec) < rank(target)}

    def begin(self, fn: FunctionDef, created: RunRecord, msg: Message, now: float,
              steps: Mapping[str, StepRecord] | None = None) -> None:
        """A run just created: send its outbox, look back for cancels, run its first step."""
        p = self.ports
        _log_started(p, created)
        p.send(created.outbox)
        if not created.status.finished:
            state = RunState(created, dict(steps or {}))
            p.send(cancel_lookback(p, fn, state))
            if created.held_by is None:
                self.replayer.replay(fn, state, msg, now, None)

    def resume(self, fn: FunctionDef, run_id: str, msg_id: str, now: float, last: bool, *,
               returned: bool = False) -> None:
        """A redelivered start of a run that exists: finish what a crash may have cut short.

        Before its first commit, send its outbox and run its first step again (``returned``:
        the queue delivered the start again, see :func:`runtime.messages.as_returned`);
        after, re-send what the start's own commit had to send.
        """
        p = self.ports
        state = p.store.load(run_id)
        if state is None:
            return
        msg = Message(MessageKind.START, fn.id, run_id, id=msg_id)
        if returned:
            msg = as_returned(msg)
        if state.run.version == 0 and not state.run.status.finished:
            p.send(state.run.outbox)
            p.send(cancel_lookback(p, fn, state))
            if state.run.held_by is None:  # a held run's first message does the rest
                # crashed before the first commit
                self.replayer.replay(fn, state, msg, now, None, redelivered=True)
        else:
            self.delivery.resend(fn, msg, hard=last)

    def start_window(self, fn: FunctionDef, run_id: str, events: Sequence[dict[str, Any]],
                     clear: GateWrite | None = None) -> bool:
        """Create and begin the run of a closed debounce or batch window.

        A batch window is closed before its run is created (the run's id and events are fixed
        by then, so creating it again creates nothing); a gate-layout window's gate is
        cleared by ``clear`` in the run's own transaction.

        A batch window's run that exists but never got past its first step is begun again:
        its creator failed or crashed in between, and may have been a worker whose own event
        went on to another window, so nothing but the window's timer would begin it.

        Returns:
            Whether the run was created (``False``: it existed; nothing written).

        Raises:
            GateMovedError: ``clear``'s gate changed since it was read (nothing was written).
        """
        p = self.ports
        now = p.clock.now()
        msg_id = f"flush-{run_id}"
        run, waiters = new_run(fn, run_id, tuple(events), msg_id, now)
        if not p.store.create_run(run, waiters, [clear] if clear is not None else []):
            if clear is not None:
                # Someone else closed this window (its run and the gate write landed
                # together): read the window again.
                raise GateMovedError(f"window of run {run_id} already closed")
            self._begin_unbegun(fn, run_id, now)
            return False
        observe_created(p.metrics, run)
        self.begin(fn, run, Message(MessageKind.FLUSH, fn.id, run_id, id=msg_id), now)
        return True

    def _begin_unbegun(self, fn: FunctionDef, run_id: str, now: float) -> None:
        """Begin a closed window's run again if it has no commit yet (see :meth:`start_window`)."""
        state = self.ports.store.load(run_id)
        if state is not None and state.run.version == 0 and not state.run.status.finished:
            self.resume(fn, run_id, f"flush-{run_id}", now, last=False)


def new_run(
    fn: FunctionDef,
    run_id: str,
    events: tuple[dict[str, Any], ...],
    msg_id: str,
    now: float,
    parent: ParentRef | None = None,
    rerun_of: RerunOf | None = None,
) -> tuple[RunRecord, list[Waiter]]:
    """A new run record (with its finish timer in its outbox) and its cancel waiters."""
    run = RunRecord(
        run_id=run_id,
        function_id=fn.id,
        events=events,
        created_at=now,
        parent=parent,
        rerun_of=rerun_of,
        deadline=now + fn.finish_timeout.total_seconds() if fn.finish_timeout else None,
        last_msg=msg_id,
    )
    try:
        waiters = cancel_waiters(fn, run, now)
    except ExpressionError as exc:  # its own event planted a value no waiter can compare
        error = ErrorInfo("InvalidEventError", f"run not started: {exc}", False)
        run = replace(run, status=RunStatus.FAILED, error=error, ended_at=now)
        return replace(run, outbox=finish_outbox(run, RunStatus.FAILED, None, error, now)), []
    if run.deadline is not None:
        timer = Message(MessageKind.TIMEOUT, fn.id, run.run_id, id=timeout_id(run.run_id),
                        due=run.deadline)
        run = replace(run, outbox=(timer,))
    return run, waiters


def _log_started(ports: Ports, run: RunRecord) -> None:
    """Log a run just created: started, held back, skipped or cancelled late."""
    log = ports.log
    if run.status is RunStatus.SKIPPED and run.error is not None:
        log.info("run %s of %s skipped: %s", run.run_id, run.function_id, run.error.message)
    elif run.held_by is not None and run.held_until is not None:
        log.info("run %s of %s created, held by %s for %.1fs", run.run_id, run.function_id,
                 run.held_by, run.held_until - run.created_at)
    else:
        log.info("run %s of %s started", run.run_id, run.function_id)
