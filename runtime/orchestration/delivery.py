"""Delivery semantics: redeliveries re-send, copies do nothing, last deliveries never strand.

A message commits once. Its redelivery (the queue's receive count above one, or a message
marked ``resend``) whose work is done re-sends what *its own* commit had to send, from the
commit log, whatever came after; a copy that made no commit re-sends nothing, so duplicates
never multiply. On a message's last deliveries before the dead-letter queue, work that
cannot be done fails its run with the reason instead of leaving it in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from runtime.app import FunctionDef
from runtime.orchestration.finishing import Finisher
from runtime.orchestration.matching import cancel_lookback, wait_lookback
from runtime.orchestration.ports import Ports
from runtime.orchestration.replaying import chained, runs_code
from runtime.records import Message, MessageKind, Outgoing, RunState, StepStatus, TimerCancel


def mine(state: RunState, msg: Message) -> bool:
    """Whether the run's last commit is ``msg``'s (or a checkpoint chain's it began)."""
    return state.run.last_msg == msg.id or chained(state.run.last_msg, msg.id)


def moot(state: RunState, out: Outgoing) -> bool:
    """Whether ``out`` is a timer its run has moved past since the commit that sent it.

    A redelivery re-sends its commit's outbox as it was; a wake-up of a step that has
    ended, or a finish timeout of a run that has, would only fire for nothing (and on AWS
    hold one of the account's schedules until then), so it is not sent again.
    """
    if not isinstance(out, Message) or out.due is None:
        return False
    if out.kind is MessageKind.TIMEOUT and out.key is None:
        return state.run.status.finished
    if out.kind is MessageKind.WAKE:
        rec = state.steps.get(out.key or "")
        return state.run.status.finished or (rec is not None and rec.status.final)
    return False


class Delivery:
    """What a redelivered, or last, delivery of a message does."""

    def __init__(self, ports: Ports, finisher: Finisher) -> None:
        self.ports = ports
        self.finisher = finisher

    def committed(self, state: RunState, msg: Message) -> bool:
        """Whether ``msg`` already made its commit (the last one, or one in the log)."""
        return mine(state, msg) or self.ports.store.committed(msg.run_id, msg.id) is not None

    def resend(self, fn: FunctionDef, msg: Message, state: RunState | None = None, *,
               hard: bool = False) -> None:
        """A redelivered message whose work is done: re-send what its commit had to send.

        The commit log keeps every commit's outbox under the id of the message that made it,
        so this is exact whatever commits came after (a sibling branch's, a resolve's), and
        a copy that made no commit re-sends nothing: duplicates never multiply.
        """
        p = self.ports
        state = state or p.store.load(msg.run_id)
        if state is None:
            return
        out: list[Outgoing] = []
        # A checkpointed chain this message began (or went on with) committed the run's last
        # change: what is left to send is that commit's outbox, not its first one's.
        last = state.run.last_msg
        done = p.store.committed(msg.run_id, last if last and chained(last, msg.id) else msg.id)
        if done is not None:
            out.extend(done.outbox)
            for key in done.step_keys:  # a wait it committed may have missed its event
                rec = state.steps.get(key)
                if rec is not None and rec.status is StepStatus.WAITING:
                    out.extend(wait_lookback(p, state, rec))
        elif state.run.last_msg == msg.id:  # a start whose run was created, nothing more
            out.extend(state.run.outbox)
        if msg.kind is MessageKind.START and not state.run.status.finished:
            out.extend(cancel_lookback(p, fn, state))
        out = [o for o in out if not moot(state, o)]
        if out:
            p.log.info("run %s: redelivered %s re-sends %d", msg.run_id, msg.kind, len(out))
            (p.send_hard if hard else p.send)(out)
            self._unset_late(msg.run_id, out)

    def _unset_late(self, run_id: str, sent: Sequence[Outgoing]) -> None:
        """Delete timers just re-sent that the run moved past while they were being sent.

        The step they wake may have ended between our read of the run and our send, and its
        commit's own delete may have run before our send: read the run again and delete them.
        Only a redelivery that re-sends timers pays this read.
        """
        timers = [o for o in sent if isinstance(o, Message) and o.due is not None
                  and o.kind in (MessageKind.WAKE, MessageKind.TIMEOUT)]
        if not timers:
            return
        fresh = self.ports.store.load(run_id)
        now = self.ports.clock.now()
        late = [TimerCancel(o.id, o.function_id, float(o.due or now), now)
                for o in timers if fresh is not None and moot(fresh, o)]
        if late:
            self.ports.queue.cancel(late)

    def last_delivery(self, fn: FunctionDef, msg: Message, receive_count: int,
                      again: Callable[[], None]) -> None:
        """The last deliveries of a message before the dead-letter queue: never strand the run.

        A message that runs user code is handled as usual: its deaths are its step's failed
        attempts, and its other receives may be Lambda's throttling. Any other message (a
        wake, match, resolve, cancel, timeout) is handled again as a redelivery (``again``),
        retried here; if it still cannot be done, its run is failed with the reason rather
        than left waiting for work that is gone.
        """
        p = self.ports
        state = p.store.load(msg.run_id)
        if state is None:
            return
        if self.committed(state, msg):
            # Its commit landed (perhaps failing the run on an earlier last delivery) and a
            # crash lost the sends: send them, as on any redelivery.
            self.resend(fn, msg, state, hard=True)
            return
        if state.run.status.finished:
            return
        if runs_code(state, msg):
            # Run it once more: a death in its step is charged to the step's attempts (the
            # replay tells a death from a throttled delivery), and Lambda refusing it is no
            # reason to fail anything; if it still never comes back, the dead-letter queue
            # holds it (and alarms) rather than a run failed for what may be throttling.
            again()
            return
        try:
            p.in_place(again, f"{msg.kind.value} message {msg.id} of run {msg.run_id}")
        except Exception as exc:
            p.log.exception("giving up on %s message %s", msg.kind.value, msg.id)
            self.finisher.give_up(fn, msg, receive_count, cause=exc)
