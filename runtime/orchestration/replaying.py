"""Replaying a run's handler and committing what it decided: the main line and branches.

A CONTINUE replays the main line; a BRANCH replays to perform one parallel step; a slice
message schedules the next slice of a wide group. Each runs the handler holding the
function's concurrency slots (or waits in line for one), commits the decision, sends the
commit's outbox, and looks back for events a wait just committed may have missed. With
``checkpointing`` the main line goes on in the same invocation while each commit's only
work left is the run's next CONTINUE (a checkpoint chain).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from runtime.app import FunctionDef
from runtime.engine import execute
from runtime.engine.decisions import StepSucceeded
from runtime.messages import is_returned, is_slice
from runtime.orchestration.commits import MAX_WAITERS_PER_COMMIT, commit_for, waiters_of
from runtime.orchestration.finishing import Finisher
from runtime.orchestration.matching import wait_lookback
from runtime.orchestration.ports import Ports
from runtime.orchestration.slots import Slots
from runtime.records import Commit, Message, MessageKind, Outgoing, RunState, StepStatus, applied
from runtime.steps.parallel import ScheduleBranches


def late(fn: FunctionDef, event: dict[str, Any], now: float) -> bool:
    """Whether a run of ``fn`` triggered by ``event`` is past its ``timeouts.start``."""
    limit = fn.start_timeout
    return limit is not None and now - event["ts"] / 1000 > limit.total_seconds()


def chain_id(base: str, version: int) -> str:
    """The id of a checkpoint chain's CONTINUE for ``version``: ``<base>~v<version>``."""
    return f"{base}~v{version}"


def chained(last_msg: str | None, msg_id: str) -> bool:
    """Whether a checkpointed chain that ``msg_id`` began or went on with made ``last_msg``.

    A chain's CONTINUEs are ``<base>~v<version>``, ``<base>`` being the id of the message
    that began it; the CONTINUE for version N makes version N+1. So ``last_msg`` is the
    chain's work past ``msg_id`` when both share the base and ``last_msg`` is a chain
    CONTINUE for ``msg_id``'s version or a later one (a chain's own first message has none).
    """
    if last_msg is None or "~v" not in last_msg:
        return False
    base, _, version = last_msg.partition("~v")
    mine, _, own = msg_id.partition("~v")
    if base != mine:
        return False
    return not own or (version.isdigit() and own.isdigit() and int(version) >= int(own))


def chain_stop(fn: FunctionDef, start: float, deadline: float | None) -> float:
    """When a checkpoint chain begun at ``start`` stops taking new steps (monotonic time).

    After ``max_runtime``, and in any case early enough that the longest step a checkpointed
    function may have (its timeout less ``max_runtime``) still ends before the invocation's
    ``deadline``: the records of a batch share one Lambda timeout, so a chain on a later
    record has less time than the first.
    """
    if fn.checkpoint is None:
        return start
    runtime = fn.checkpoint.total_seconds()
    stop = start + runtime
    if deadline is not None:
        stop = min(stop, deadline - (fn.aws.timeout_s - runtime))
    return stop


def _only_continue(outbox: Sequence[Outgoing], run_id: str) -> Message | None:
    """The outbox's one message if it is the run's next CONTINUE, due now; else ``None``."""
    if len(outbox) != 1:
        return None
    [only] = outbox
    if (isinstance(only, Message) and only.kind is MessageKind.CONTINUE
            and only.run_id == run_id and only.due is None and not only.payload):
        return only
    return None


def runs_code(state: RunState, msg: Message) -> bool:
    """Whether ``msg`` would run the handler or a step now (so a dead worker fails the run).

    That is a CONTINUE at the current version, or a BRANCH whose step still waits for
    this attempt.
    """
    if msg.kind is MessageKind.CONTINUE:
        return current(state, msg) and not is_slice(msg)
    if msg.kind is MessageKind.BRANCH:
        return branch_due(state, msg)
    return False


def current(state: RunState, msg: Message) -> bool:
    """Whether CONTINUE ``msg`` was issued for the run's current version."""
    return msg.version == state.run.version


def branch_due(state: RunState, msg: Message) -> bool:
    """Whether BRANCH ``msg``'s step still waits for the attempt ``msg`` performs."""
    rec = state.steps.get(msg.key or "")
    return (rec is not None and rec.status in (StepStatus.SCHEDULED, StepStatus.RETRYING)
            and rec.attempt == msg.attempt)


class Replayer:
    """Runs the handler for CONTINUE, BRANCH and slice messages, and commits its decision."""

    def __init__(self, ports: Ports, finisher: Finisher, slots: Slots,
                 paused: Callable[[str], bool] | None = None) -> None:
        self.ports = ports
        self.finisher = finisher
        self.slots = slots
        #: Whether a function is paused (a checkpoint chain stops before its next step).
        self.paused = paused or (lambda function_id: False)

    def on_continue(self, fn: FunctionDef, state: RunState, msg: Message, now: float,
                    redelivered: bool) -> bool:
        """CONTINUE: replay the main line at the current version, or schedule a slice."""
        if is_slice(msg):
            return self.next_slice(fn, state, msg, now)
        if not current(state, msg):
            # A stale message that waited in line (a copy of it ran the step) gives its
            # place on: a place left behind would keep the line yielding to it.
            self.slots.forget(fn, state, msg)
            return False
        return self.replay(fn, state, msg, now, None, redelivered=redelivered)

    def on_branch(self, fn: FunctionDef, state: RunState, msg: Message, now: float,
                  redelivered: bool) -> bool:
        """BRANCH: perform one parallel step, if it still waits for this attempt."""
        if not branch_due(state, msg):
            self.slots.forget(fn, state, msg)  # as a stale CONTINUE does
            return False
        return self.replay(fn, state, msg, now, msg.key, redelivered=redelivered)

    def replay(self, fn: FunctionDef, state: RunState, msg: Message, now: float,
               target: str | None, *, redelivered: bool = False) -> bool:
        """Replay the handler and commit its decision; whether a commit landed.

        A run past its deadline (or not started within ``timeouts.start``) is cancelled
        instead. With concurrency limits, the handler runs holding a slot per limit; without
        a free slot the message waits in line (re-sent to come back later) and nothing runs.

        Raises:
            CommitContentionError: A branch kept losing version races to its siblings.
        """
        run = state.run
        if run.deadline is not None and now >= run.deadline and target is None:
            return self.finisher.cancel(run.run_id, f"not finished within {fn.finish_timeout}",
                                        msg.id)
        if run.held_by is not None and run.version == 0 and late(fn, run.events[0], now):
            return self.finisher.cancel(run.run_id, f"not started within {fn.start_timeout}",
                                        msg.id)
        slots = self.slots.take_slots(fn, state, msg, target, redelivered=redelivered)
        if slots is None:
            return False  # queued behind the concurrency limit; msg comes back
        try:
            lost = self.died(state, msg)
            if target is None:
                return self.main_line(fn, state, msg, now, lost=lost)
            return self.branch(fn, state, msg, now, target, lost=lost)
        finally:
            self.slots.release(slots)

    def died(self, state: RunState, msg: Message) -> bool:
        """Whether an earlier delivery of ``msg`` reached user code and died there.

        Only a message the queue delivered again asks, and leaves its own mark before it
        runs user code: a delivery that Lambda throttled never got here, so it left none
        and is not charged. (The first delivery leaves no mark, so a step's first death is
        known from its second: a step that kills its worker runs at most twice per attempt,
        and the usual path writes nothing.)
        """
        if not is_returned(msg):
            return False
        return self.ports.store.mark_delivery(state.run.run_id, msg.id,
                                              now=self.ports.clock.now())

    def branch(self, fn: FunctionDef, state: RunState, msg: Message, now: float,
               target: str, *, lost: bool = False) -> bool:
        """Perform branch step ``target`` and commit it; whether a commit landed.

        A branch that lost only a version race with a sibling commits again on the fresh
        state, as long as its step is still where it was.
        """
        p = self.ports
        run_id = state.run.run_id
        logger = logging.LoggerAdapter(p.log, {"run_id": run_id, "function_id": fn.id,
                                               "step": target})
        decision = execute(fn, state, now=now, target=target, limits=p.limits, logger=logger,
                           lost=lost)
        seen = state

        def attempt() -> bool | None:
            nonlocal seen
            commit = commit_for(p.app, fn, seen, msg, decision, now)
            if commit is None:
                return False
            if p.commit(fn.id, run_id, commit):
                p.send(commit.outbox)
                self.after_commit(seen, commit)
                return True
            fresh = p.store.load(run_id)
            if fresh is None or fresh.run.status.finished:
                return False
            rec, old = fresh.steps.get(target), state.steps.get(target)
            if rec is None or old is None or (rec.status, rec.attempt) != (old.status,
                                                                             old.attempt):
                return False
            seen = fresh
            return None

        return p.retrying(f"run {run_id}: branch '{target}'", attempt)

    def main_line(self, fn: FunctionDef, state: RunState, msg: Message, now: float, *,
                  lost: bool = False) -> bool:
        """Replay the main line and commit its decision; whether a commit landed.

        A commit refused means the main line moved on without us: the message was stale.
        With ``checkpointing``, a step's commit whose only work left is the run's next
        CONTINUE does not send it: this invocation replays on as if it had received it (the
        state it just committed is the run's, since its commit took that version), until a
        decision that needs the queue (a sleep, a wait, branches, a retry's delay, the end),
        the function's ``max_runtime``, or a lost race (a cancel, a timeout); then the last
        commit's outbox is sent. Each CONTINUE of the chain has the id
        ``<first message id>~v<version>``, and its commit records that id, so a redelivery of
        any message of the chain finds the run's last commit among its own
        (:func:`chained`) and re-sends that commit's outbox: a crash anywhere in the chain
        loses no recorded step and strands no run.
        """
        p = self.ports
        run_id, base = state.run.run_id, msg.id.partition("~v")[0]
        logger = logging.LoggerAdapter(p.log, {"run_id": run_id, "function_id": fn.id,
                                               "step": ""})
        chain = fn.checkpoint is not None
        stop_at = chain_stop(fn, time.monotonic(), p.deadline)
        pending: Commit | None = None  # the last commit that landed, while its sends are due
        landed = False
        while True:
            decision = execute(fn, state, now=now, target=None, limits=p.limits, logger=logger,
                               lost=lost)
            lost = False
            commit = commit_for(p.app, fn, state, msg, decision, now)
            if commit is None:
                break
            if chain:
                commit = replace(commit, outbox=tuple(
                    replace(o, id=chain_id(base, o.version))
                    if isinstance(o, Message) and o.kind is MessageKind.CONTINUE
                    and o.run_id == run_id and o.version is not None else o
                    for o in commit.outbox))
            if not p.commit(fn.id, run_id, commit):
                break  # the run moved on without us (stale, or a cancel mid-chain): stop here
            landed = True
            nxt = _only_continue(commit.outbox, run_id)
            now = p.clock.now()
            if (not chain or nxt is None or not isinstance(decision, StepSucceeded)
                    or time.monotonic() >= stop_at or self.paused(fn.id)
                    or (state.run.deadline is not None and now >= state.run.deadline)):
                # Its sends first, as soon as the commit landed: what follows (the lookback
                # of a wait) may fail, and the run must not wait for a redelivery to go on.
                p.send(commit.outbox)
                self.after_commit(state, commit)
                pending = None
                break
            self.after_commit(state, commit)
            pending = commit
            state = applied(state, commit)
            p.store.persist()  # recorded for good before the next step's side effects
            msg = nxt  # performed here rather than sent
        if pending is not None:
            # A chain cut short by a refused or empty commit: the last landed commit's sends
            # (its CONTINUE: stale, and dropped, if the run moved on without us).
            p.send(pending.outbox)
        return landed

    def next_slice(self, fn: FunctionDef, state: RunState, msg: Message, now: float) -> bool:
        """Schedule the next slice of a wide parallel group, at the run's current version.

        Only a ScheduleBranches decision is committed: anything else is the main line's own
        work, done by its CONTINUE.

        Unlike other messages, a slice message is not tied to a version or a step, so nothing
        in the run stops a copy of it from scheduling the slice after the one it already
        scheduled. A message commits once (a redelivery re-sends *its* commit's outbox), so
        each try first asks whether this message id has a commit: if so, this is a copy
        and the slice is someone's work already (its sends, if a crash lost them, come with
        that delivery's redelivery).

        Raises:
            CommitContentionError: The group's branches kept moving the version on.
        """
        p = self.ports
        seen = state

        def attempt() -> bool | None:
            nonlocal seen
            if p.store.committed(seen.run.run_id, msg.id) is not None:
                return False
            decision = execute(fn, seen, now=now, target=None, limits=p.limits)
            if not isinstance(decision, ScheduleBranches):
                return False
            commit = commit_for(p.app, fn, seen, msg, decision, now)
            if commit is not None and p.commit(fn.id, seen.run.run_id, commit):
                p.send(commit.outbox)
                return True
            fresh = p.store.load(seen.run.run_id)
            if fresh is None or fresh.run.status.finished:
                return False
            seen = fresh
            return None

        return p.retrying(f"run {state.run.run_id}: scheduling the next slice", attempt)

    def after_commit(self, state: RunState, commit: Commit) -> None:
        """Look back for events a wait just committed may have missed (sent before it).

        And a run that finished with more waiters than its commit could remove loses the rest
        now (until then they match a finished run, which does nothing).
        """
        p = self.ports
        if commit.run is not None and commit.run.status is not None:
            fn = p.app.find(state.run.function_id)
            p.store.remove_waiters(waiters_of(fn, state)[MAX_WAITERS_PER_COMMIT:])
        for w in commit.steps:
            if w.record.status is StepStatus.WAITING and w.expect_status is not StepStatus.WAITING:
                p.send(wait_lookback(p, state, w.record))
