"""Ending a run from outside its handler: cancel, the finish timeout, giving up.

The handler's own end (completed, failed) is its decision's commit; these are the others:
a cancel (by hand, by ``cancel_on``, by flow control), the ``timeouts.finish`` deadline
(TIMEOUT), and a message's last delivery that cannot be done (the run is failed with the
reason rather than left in flight with its only message dead-lettered).
"""

from __future__ import annotations

from dataclasses import replace

from runtime.app import FunctionDef
from runtime.messages import StartPayload
from runtime.orchestration.commits import MAX_WAITERS_PER_COMMIT, finish_outbox, waiters_of
from runtime.orchestration.ports import Ports
from runtime.records import (
    Commit,
    ErrorInfo,
    Message,
    MessageKind,
    RunPatch,
    RunRecord,
    RunState,
    RunStatus,
)
from runtime.steps.base import DUE_SLACK, moot_timers


class Finisher:
    """Cancels, times out and fails runs from outside their handlers."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def cancel(self, run_id: str, reason: str, msg_id: str) -> bool:
        """Commit the cancellation of a running run; whether this call cancelled it."""
        error = ErrorInfo("FunctionCancelled", reason, retriable=False)
        return self.finish(run_id, RunStatus.CANCELLED, error, msg_id)

    def finish(self, run_id: str, status: RunStatus, error: ErrorInfo, msg_id: str, *,
               hard: bool = False) -> bool:
        """Cancel or fail a running run; whether this call did (``hard``: a last delivery).

        Raises:
            CommitContentionError: The run kept changing under us.
        """
        p = self.ports
        return p.retrying(f"finishing run {run_id}",
                          lambda: self._finish_once(run_id, status, error, msg_id, hard))

    def _finish_once(self, run_id: str, status: RunStatus, error: ErrorInfo, msg_id: str,
                     hard: bool) -> bool | None:
        p = self.ports
        state = p.store.load(run_id)
        if state is None or state.run.status.finished:
            return False
        # The run's function may be gone from the code (a deploy removed it): still
        # cancellable, with only the waiters its steps show.
        fn = p.app.find(state.run.function_id)
        now = p.clock.now()
        remove = waiters_of(fn, state)
        commit = Commit(
            msg_id=msg_id,
            expect_version=state.run.version,
            run=RunPatch(status=status, error=error, ended_at=now),
            remove_waiters=remove[:MAX_WAITERS_PER_COMMIT],
            outbox=(*finish_outbox(state.run, status, None, error, now),
                    *moot_timers(state, msg_id, ending=True)),
        )
        if not p.commit(state.run.function_id, run_id, commit):
            return None
        p.log.info("run %s %s: %s", run_id, status.value.lower(), error.message)
        (p.send_hard if hard else p.send)(commit.outbox)
        # Waiters past one transaction's worth are removed afterwards; until then a match
        # finds the run finished and does nothing.
        p.store.remove_waiters(remove[MAX_WAITERS_PER_COMMIT:])
        return True

    def on_timeout(self, fn: FunctionDef | None, state: RunState, msg: Message,
                   now: float) -> bool:
        """TIMEOUT: cancel the run once its finish deadline passed (hop until then).

        ``fn`` is ``None`` when a deploy removed the function: the deadline still holds.
        """
        deadline = state.run.deadline
        if deadline is None:
            return False
        if now + DUE_SLACK < deadline:
            self.ports.hop(msg, deadline)
            return True
        limit = fn.finish_timeout if fn is not None else "its finish timeout"
        return self.cancel(state.run.run_id, f"not finished within {limit}", msg.id)

    def give_up(self, fn: FunctionDef, msg: Message, receive_count: int,
                cause: Exception | None = None) -> None:
        """The last delivery of a message that cannot be done: fail the run instead.

        Every earlier delivery ended without a result: the worker was killed (Lambda
        timeout, out of memory) or the platform kept failing (``cause``: what the last try
        raised). Running it again would only land it in the dead-letter queue and leave the
        run in flight for ever. Retried in place (it is idempotent): no delivery is left.
        """
        self.ports.in_place(lambda: self._give_up(fn, msg, receive_count, cause),
                            f"failing run {msg.run_id}")

    def _give_up(self, fn: FunctionDef, msg: Message, receive_count: int,
                 cause: Exception | None) -> None:
        p = self.ports
        error = _lost(msg, receive_count, cause)
        if msg.kind is MessageKind.START and p.store.load(msg.run_id) is None:
            now = p.clock.now()
            start = StartPayload.of(msg)
            run = RunRecord(
                run_id=msg.run_id, function_id=fn.id, events=start.events, created_at=now,
                parent=start.parent, status=RunStatus.FAILED, error=error, ended_at=now,
                last_msg=msg.id,
            )
            run = replace(run, outbox=finish_outbox(run, RunStatus.FAILED, None, error, now))
            if p.create(run, []) is not None:
                p.send_hard(run.outbox)
            return
        self.finish(msg.run_id, RunStatus.FAILED, error, msg.id, hard=True)


def _lost(msg: Message, receive_count: int, cause: Exception | None) -> ErrorInfo:
    """Why a run is failed on its message's last delivery."""
    where = f"step '{msg.key}'" if msg.key else "the handler"
    if cause is None:
        return ErrorInfo(
            "WorkerLostError",
            f"{where} was delivered {receive_count} times without finishing: the worker "
            "was killed (timeout or out of memory) or kept failing; the run is failed "
            "rather than retried for ever",
            retriable=False,
        )
    return ErrorInfo(
        "DeliveryFailedError",
        f"the {msg.kind.value} message for {where} failed on all {receive_count} "
        f"deliveries; last error: {type(cause).__name__}: {cause}"[:8192],
        retriable=False,
    )
