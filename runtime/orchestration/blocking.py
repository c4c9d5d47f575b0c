"""Blocked runs: in flight, but the deployed code cannot go on with them (yet).

Two causes, both ones a deploy makes and a later deploy can undo, so neither fails the run
(no retries burned, no ``on_failure``, no ``function.failed``):

- **Nondeterminism**: the code no longer replays the run's history (a recorded sleep is now
  a ``step.run`` at the same key). The engine decides ``RunBlocked``; :func:`block` commits
  the run ``Blocked`` with the ``NondeterminismError`` (which step, what was recorded, what
  the code now calls) and a CONTINUE due in :data:`BLOCKED_RETRY`, which replays it with the
  code deployed by then (Temporal retries a workflow task the same way).
- **A removed function**: a message of a function the app no longer has. :class:`Absent`
  keeps it (sent again every :data:`BLOCKED_RETRY`, counted neither as a failure nor as a
  pushback, so it never reaches the dead-letter queue) and marks its run ``Blocked`` with a
  ``FunctionNotFoundError``; when the function is deployed again, the kept message does
  its work.

Either way, the first commit that moves the run on makes it ``Running`` again
(:func:`unblocked`). A blocked run can be cancelled, and rerun from a step, like any run.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from runtime.engine.decisions import Decision, Noop, RunBlocked
from runtime.messages import Deferral, deferred
from runtime.orchestration.ports import Ports
from runtime.records import (
    Commit,
    ErrorInfo,
    Message,
    MessageKind,
    RunPatch,
    RunState,
    RunStatus,
)
from runtime.steps.base import CommitContext

#: How often a blocked run is tried again with the code deployed by then: a fixing deploy
#: lets it go on within this time. One message per blocked run per 10 minutes: 144 a day.
BLOCKED_RETRY = 600.0
_log = logging.getLogger("stepkit")


def block(d: RunBlocked, cx: CommitContext) -> Commit:
    """The run Blocked with its cause, and the CONTINUE that tries it again later."""
    run = cx.state.run
    if run.status is not RunStatus.BLOCKED:
        _log.error("run %s of %s blocked: %s", run.run_id, run.function_id, d.error.message)
    return replace(cx.base, run=RunPatch(status=RunStatus.BLOCKED, error=d.error),
                   outbox=(cx.next.with_due(cx.now + BLOCKED_RETRY),))


def unblocked(state: RunState, d: Decision, commit: Commit | None,
              base: Commit) -> Commit | None:
    """``commit`` (``None`` for a ``Noop``), making a blocked run ``Running`` again.

    A replay that got past the point that blocked the run is proof the code can go on with
    it, whatever it decided: a step, a wait on steps in flight (``Noop``), its end.
    """
    if state.run.status is not RunStatus.BLOCKED or isinstance(d, RunBlocked):
        return commit
    if commit is None:
        assert isinstance(d, Noop)
        return replace(base, run=RunPatch(status=RunStatus.RUNNING, clear_error=True))
    patch = commit.run or RunPatch()
    if patch.status is None:
        patch = replace(patch, status=RunStatus.RUNNING, clear_error=patch.error is None)
    return replace(commit, run=patch)


class Absent:
    """Messages of a function the deployed app does not have (a deploy removed it)."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def on_message(self, msg: Message, now: float) -> None:
        """Keep ``msg`` until its function is back, and mark its run Blocked.

        A START or FLUSH has no run yet; a CONTINUE for another version than the run's, or
        any message of a finished run, has no work left and is dropped, as for a function
        that exists.
        """
        p = self.ports
        keep = deferred(msg, Deferral.of(msg), now + BLOCKED_RETRY)
        what = f"{msg.kind.value} message {msg.id} of function '{msg.function_id}'"
        state = None
        if msg.kind not in (MessageKind.START, MessageKind.FLUSH):
            state = p.store.load(msg.run_id)
            if state is None or state.run.status.finished or (
                    msg.kind is MessageKind.CONTINUE and msg.version != state.run.version):
                p.log.info("%s dropped: its run has moved on", what)
                return
        if state is not None and state.run.status is RunStatus.RUNNING:
            # The commit below moves the version on: a CONTINUE kept goes with it.
            moved = (replace(keep, version=state.run.version + 1)
                     if msg.kind is MessageKind.CONTINUE else keep)
            error = ErrorInfo(
                "FunctionNotFoundError",
                f"function '{msg.function_id}' is not in the deployed app; the run goes on "
                "when it is deployed again (its messages are kept)", False)
            # Its own message id: the kept message has not done its work.
            commit = Commit(f"{msg.id}/absent", state.run.version, outbox=(moved,),
                            run=RunPatch(status=RunStatus.BLOCKED, error=error))
            if p.commit(msg.function_id, msg.run_id, commit):
                p.log.error("run %s blocked: %s", msg.run_id, error.message)
                p.send(commit.outbox)
                return
            # Another message moved the run first: keep this one as it is (a CONTINUE of
            # the old version then has no work left, as it would have had anyway).
        p.log.warning("%s kept: the function is not deployed; again in %.0fs", what,
                      BLOCKED_RETRY)
        p.send([keep])
