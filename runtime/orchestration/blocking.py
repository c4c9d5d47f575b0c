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
from runtime.orchestration.ports import Ports
from runtime.orchestration.rounds import round_claim
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


#: A START or FLUSH of a removed function (its run not created yet) is kept this many
#: rounds, 14 days: as long as SQS keeps a message. Past it, it is dropped with an error.
MAX_START_ROUNDS = int(14 * 86400 / BLOCKED_RETRY)
_ROUND = "absent"  # the payload key counting a kept message's rounds


class Absent:
    """Messages of a function the deployed app does not have (a deploy removed it)."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def on_message(self, msg: Message, now: float, redelivered: bool = False) -> None:
        """Keep ``msg`` until its function is back, and mark its run Blocked.

        A kept message comes back every :data:`BLOCKED_RETRY`. Each round is one commit to
        its run, named after the message and the round, so a duplicate of the message (a
        queue may deliver one twice) finds the round taken and ends there: copies never
        multiply however long the function is gone. A ``redelivered`` one, whose earlier
        delivery died or failed, re-sends what its round's commit had to send. A START or
        FLUSH has no run yet: it is kept :data:`MAX_START_ROUNDS` rounds. A CONTINUE for
        another version than the run's, or any message of a finished run, has no work left
        and is dropped, as for a function that exists.
        """
        p = self.ports
        rounds = int((msg.payload or {}).get(_ROUND, 0))
        # A fresh copy (not a deferred or returned one): only a copy of a delivery that
        # failed or died may re-send its round's outbox, or copies would multiply.
        payload = {k: v for k, v in (msg.payload or {}).items()
                   if k not in ("deferred", "returned", "resend")}
        keep = replace(msg, payload={**payload, _ROUND: rounds + 1}, due=now + BLOCKED_RETRY)
        what = f"{msg.kind.value} message {msg.id} of function '{msg.function_id}'"
        if msg.kind in (MessageKind.START, MessageKind.FLUSH):
            if rounds >= MAX_START_ROUNDS:
                p.log.error("%s dropped: the function has not been deployed for %d days",
                            what, int(rounds * BLOCKED_RETRY / 86400))
                return
            # No run yet to commit the round to: the round claims a gate, as a held message
            # does, so a duplicate delivery of a kept START does not fork a second copy.
            claim = round_claim(p.store, "absent", msg, str(rounds), now)
            if not claim.first(died=redelivered):
                p.log.info("%s: a duplicate of round %d, dropped", what, rounds)
                return
            p.log.warning("%s kept: the function is not deployed", what)
            p.send([keep])
            claim.sent(died=redelivered)
            return
        p.retrying(f"keeping {what}", lambda: self._keep(msg, keep, rounds, what,
                                                                  redelivered))

    def _keep(self, msg: Message, keep: Message, rounds: int, what: str,
              redelivered: bool) -> bool | None:
        """One try at this round's commit; ``None`` when it lost a race (try again)."""
        p = self.ports
        state = p.store.load(msg.run_id)
        if state is None or state.run.status.finished or (
                msg.kind is MessageKind.CONTINUE and msg.version != state.run.version):
            p.log.info("%s dropped: its run has moved on", what)
            return False
        name = f"{msg.id}/{_ROUND}/{rounds}"  # not the message's own id: its work is not done
        done = p.store.committed(msg.run_id, name)
        if done is not None:  # this round is kept already: a duplicate, or our own death
            # Its outbox is sent again until one such send is marked done (marked after it:
            # a send that fails leaves it to the next copy), so copies that failed cannot
            # keep making copies.
            claim = round_claim(p.store, "absent", msg, name, p.clock.now())
            if redelivered and not claim.resent():
                p.send(done.outbox)
                claim.sent(died=True)
            return False
        if msg.kind is MessageKind.CONTINUE:  # the commit moves the version on: so does it
            keep = replace(keep, version=state.run.version + 1)
        error = ErrorInfo(
            "FunctionNotFoundError",
            f"function '{msg.function_id}' is not in the deployed app; the run goes on when "
            "it is deployed again (its messages are kept)", False)
        commit = Commit(name, state.run.version, outbox=(keep,),
                        run=RunPatch(status=RunStatus.BLOCKED, error=error))
        if not p.commit(msg.function_id, msg.run_id, commit):
            return None
        if state.run.status is not RunStatus.BLOCKED:
            p.log.error("run %s blocked: %s", msg.run_id, error.message)
        p.send(commit.outbox)
        return True
