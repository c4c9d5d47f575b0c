"""Resolving pending steps from outside the main line: WAKE, MATCH and RESOLVE messages.

A pending step (a sleep, a wait, an invoke) ends when its kind says so
(:mod:`runtime.steps`: ``on_wake``, ``on_match``, ``on_child_finished``); this module reads
what the kind needs, applies its answer with the one resolution commit, and continues the
run. A WAKE is dispatched by the step's kind, so a sleep's, a wait's timeout and an
invoke's timeout are each handled in their kind's module.
"""

from __future__ import annotations

from runtime.messages import MatchPayload, ResolvePayload
from runtime.orchestration.matching import wait_timeout
from runtime.orchestration.ports import Ports
from runtime.records import Message, RunState, StepKind, StepRecord, StepStatus
from runtime.steps import KINDS
from runtime.steps.base import Hop, Resolution, resolution_commit
from runtime.steps.invoke import on_child_finished
from runtime.steps.wait import on_match, waiter


class Resolver:
    """Ends pending steps when their wake, event or child run arrives."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def on_wake(self, state: RunState, msg: Message, now: float) -> bool:
        """WAKE: a step's ``wake_at`` passed (or a skip): its kind ends it, or it hops."""
        rec = state.steps.get(msg.key or "")
        if rec is None or rec.wake_at is None:
            return False
        on_wake = KINDS[rec.kind].on_wake
        answer = on_wake(rec, msg, now) if on_wake is not None else None
        if isinstance(answer, Hop):
            self.ports.hop(msg, answer.due)
            return True
        if answer is None:
            return False
        if rec.kind is StepKind.WAIT:  # timing out: an event sent in time but late wins
            answer = self._timing_out(state, rec)
        return self.resolve(state.run.run_id, rec.key, rec.status, answer, msg.id)

    def _timing_out(self, state: RunState, rec: StepRecord) -> Resolution:
        """A wait's timeout: its waiter closed first, then whatever event came in time.

        The router logs an event before it reads the waiters; the timeout removes the waiter
        before it reads the timeline. So an event whose routing still saw the waiter (and
        sent a MATCH the timeout's commit would beat) was logged before this read, which
        finds it; one routed after the waiter closed is found here or by no one. Reading
        first left a gap: an event logged and matched between the read and the commit lost
        its MATCH to a timeout of ``None``.
        """
        self.ports.store.remove_waiters([waiter(state.run, rec)])
        return wait_timeout(self.ports, state, rec)

    def on_match(self, state: RunState, msg: Message) -> bool:
        """MATCH: an event matched a wait; hand it the event (read back if by reference)."""
        rec = state.steps.get(msg.key or "")
        if rec is None or rec.status is not StepStatus.WAITING:
            return False
        payload = MatchPayload.of(msg)
        event = payload.event
        if event is None and payload.ref is not None:
            ref = payload.ref
            event = self.ports.store.logged_event(ref.name, ref.ts, ref.event_id)
        if event is None:
            self.ports.log.warning("run %s: matched event of %s no longer kept", msg.run_id,
                                   msg.key)
            return False
        answer = on_match(rec, event)
        return answer is not None and self.resolve(state.run.run_id, rec.key, rec.status,
                                                   answer, msg.id)

    def on_child_finished(self, state: RunState, msg: Message) -> bool:
        """RESOLVE: an invoked child run finished; hand the invoke step its result."""
        child = self.ports.store.load(ResolvePayload.of(msg).child_run_id)
        answer = on_child_finished(child.run) if child is not None else None
        if answer is None:
            return False
        return self.resolve(state.run.run_id, msg.key or "", StepStatus.INVOKING, answer,
                            msg.id)

    def resolve(self, run_id: str, key: str, expect: StepStatus, resolution: Resolution,
                msg_id: str) -> bool:
        """End pending step ``key`` (while it is still ``expect``) and continue the run.

        Raises:
            CommitContentionError: The run kept changing under us.
        """
        return self.ports.retrying(
            f"run {run_id}: resolving '{key}'",
            lambda: self._resolve_once(run_id, key, expect, resolution, msg_id))

    def _resolve_once(self, run_id: str, key: str, expect: StepStatus, resolution: Resolution,
                      msg_id: str) -> bool | None:
        p = self.ports
        state = p.store.load(run_id)
        if state is None or state.run.status.finished:
            return False
        rec = state.steps.get(key)
        if rec is None or rec.status is not expect:
            return False
        commit = resolution_commit(KINDS[rec.kind], state, rec, resolution, msg_id,
                                   p.clock.now())
        if not p.commit(state.run.function_id, run_id, commit):
            return None
        p.log.info("step %s of run %s %s", key, run_id, resolution.status.value)
        p.send(commit.outbox)
        return True
